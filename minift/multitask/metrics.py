"""What a stream of tasks leaves behind: the accuracy matrix and its summaries.

R[i][j] is the metric on task j after training on tasks 0..i (Lopez-Paz and Ranzato
2017, GEM). With T tasks:

- average accuracy   ACC = (1/T) sum_j R[T-1][j]                  (the end of the stream)
- backward transfer  BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j]) (< 0: forgetting)
- forgetting (Chaudhry et al. 2018, RWalk)
      f_j = max_{i < T-1} R[i][j] - R[T-1][j],   F = 1/(T-1) sum_{j<T-1} f_j
  (the drop from the best the model ever was on j, not only from just after learning j).
"""

from __future__ import annotations


def _check(R: list[list[float]]) -> int:
    T = len(R)
    if T == 0 or any(len(row) != T for row in R):
        raise ValueError(f"the accuracy matrix must be square T x T, got {[len(r) for r in R]}")
    return T


def average_accuracy(R: list[list[float]]) -> float:
    T = _check(R)
    return sum(R[T - 1]) / T


def backward_transfer(R: list[list[float]]) -> float:
    T = _check(R)
    if T < 2:
        return 0.0
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forgetting(R: list[list[float]]) -> float:
    T = _check(R)
    if T < 2:
        return 0.0
    return sum(max(R[i][j] for i in range(T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def stream_summary(R: list[list[float]]) -> dict[str, float]:
    return {"acc": average_accuracy(R), "bwt": backward_transfer(R), "forgetting": forgetting(R)}
