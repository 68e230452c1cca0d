"""The chapters' runs, apart from the algorithms they run.

Each module serves one chapter (or a pair): the workers it launches to compare a scheme
with its independent reference (DDP, PyTorch's averager, the unsplit model, one big
batch), the timings it shows, and the training runs its figures and widgets draw. A
reader of ``nnpar_lite/<scheme>.py`` sees only the scheme; how the chapter checks and
measures it lives here.
"""
