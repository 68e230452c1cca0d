"""The article's two code examples (seed 4.1 and 4.2), kept as written.

Only the formatting is repaired so that they parse as Python: the article's
markdown ate the underscores of ``__init__`` and the line breaks around the
class headers. Nothing else is changed, faults included. Chapter 02 runs them,
watches them fail, and repairs them one fault at a time; the repaired networks
are in :mod:`nnpar_lite.models`.

Seed 4.1 is headed "数据并行" (data parallelism) and 4.2 "任务并行" (task
parallelism), but both run one process on one batch: neither is parallel.
"""

import numpy as np


# Seed 4.1 数据并行, as written.
class NeuralNetwork41:
    def __init__(self):
        self.W = np.random.randn(2, 3)
        self.b = np.random.randn(3)

    def forward(self, X):
        return np.dot(X, self.W) + self.b

    def loss(self, Y, Y_hat):
        return np.mean((Y - Y_hat) ** 2)

    def backprop(self, X, Y, Y_hat):
        dL_dY_hat = 2 * (Y - Y_hat)
        dL_dW = np.dot(X.T, dL_dY_hat)
        dL_db = np.sum(dL_dY_hat)
        return dL_dW, dL_db

    def train(self, X, Y, epochs, batch_size):
        n_samples = X.shape[0]
        n_batches = n_samples // batch_size
        for epoch in range(epochs):
            for i in range(n_batches):
                start_idx = i * batch_size
                end_idx = (i + 1) * batch_size
                X_batch = X[start_idx:end_idx]
                Y_batch = Y[start_idx:end_idx]
                Y_hat_batch = self.forward(X_batch)
                loss = self.loss(Y_batch, Y_hat_batch)
                dL_dW, dL_db = self.backprop(X_batch, Y_batch, Y_hat_batch)
                self.W -= dL_dW / n_batches
                self.b -= dL_db / n_batches


# Seed 4.2 任务并行, as written.
class NeuralNetwork42:
    def __init__(self):
        self.W1 = np.random.randn(2, 4)
        self.b1 = np.random.randn(4)
        self.W2 = np.random.randn(4, 3)
        self.b2 = np.random.randn(3)

    def forward(self, X):
        X1 = np.dot(X, self.W1) + self.b1
        X2 = np.tanh(X1)
        Y_hat = np.dot(X2, self.W2) + self.b2
        return Y_hat

    def loss(self, Y, Y_hat):
        return np.mean((Y - Y_hat) ** 2)

    def backprop(self, X, Y, Y_hat):
        dL_dY_hat = 2 * (Y - Y_hat)
        dL_dW2 = np.dot(np.tanh(X).T, dL_dY_hat)
        dL_db2 = np.sum(dL_dY_hat)
        X1 = np.dot(X, self.W1) + self.b1
        dL_dX1 = np.dot(dL_dY_hat, 1.0 - np.tanh(X1)**2)
        dL_dW1 = np.dot(X.T, dL_dX1)
        dL_db1 = np.sum(dL_dX1)
        return dL_dW1, dL_db1, dL_dW2, dL_db2

    def train(self, X, Y, epochs=1000, batch_size=4):
        n_samples = X.shape[0]
        n_batches = n_samples // batch_size
        for epoch in range(epochs):
            for i in range(n_batches):
                start_idx = i * batch_size
                end_idx = (i + 1) * batch_size
                X_batch = X[start_idx:end_idx]
                Y_batch = Y[start_idx:end_idx]
                Y_hat_batch = self.forward(X_batch)
                loss = self.loss(Y_batch, Y_hat_batch)
                dL_dW1, dL_db1, dL_dW2, dL_db2 = self.backprop(X_batch, Y_batch, Y_hat_batch)
                self.W1 -= dL_dW1 / n_batches
                self.b1 -= dL_db1 / n_batches
                self.W2 -= dL_dW2 / n_batches
                self.b2 -= dL_db2 / n_batches
