"""The chapters' runs, apart from the algorithms they run.

Each module serves one chapter and carries its topic's name, the same as the chapter's
``widgets`` and ``exercises`` modules (``scaling`` for chapter 07, ``communication_efficiency``
for chapter 09, …); a chapter with several harnesses has a subpackage of that name, one module
per topic (``sharding``, ``communication_efficiency``). Each holds the workers a chapter launches
to compare a scheme with its independent reference (DDP, PyTorch's averager, the unsplit model,
one big batch), the timings it shows, and the training runs its figures and widgets draw. A
reader of ``nnpar_lite/<scheme>.py`` sees only the scheme; how the chapter checks and measures
it lives here.
"""
