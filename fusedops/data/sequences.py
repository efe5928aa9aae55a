"""Generated sequence tasks for the sequence models: digit strings to reverse, to sort, or two
numbers to add. Every example is drawn from a seeded generator, so the held-out set is fixed.

Tokens: 0 = padding, 1 = BOS (start of the answer), 2 = '+', 3..12 = digits 0..9."""
import torch

PAD, BOS, PLUS, DIGIT0 = 0, 1, 2, 3
VOCAB = DIGIT0 + 10
TASKS = ("reverse", "sort", "add")


def make_task(task: str, n: int, length: int, generator: torch.Generator):
    """(questions [n, Lq], answers [n, La]) as token ids.

    reverse / sort: a string of `length` digits and its reverse / sorted digits;
    add: two `length`-digit numbers a + b and the `length + 1` digits of the sum (leading
    zeros kept, so every answer has the same length)."""
    if task not in TASKS:
        raise ValueError(f"fusedops.data.sequences: task must be one of {TASKS}, got {task!r}")
    if length < 1 or n < 1:
        raise ValueError(f"fusedops.data.sequences: n and length must be >= 1, got {n}, {length}")
    if task == "add":
        a = torch.randint(0, 10, (n, length), generator=generator)
        b = torch.randint(0, 10, (n, length), generator=generator)
        place = 10 ** torch.arange(length - 1, -1, -1)
        total = (a * place).sum(1) + (b * place).sum(1)
        digits = torch.stack([(total // 10 ** k) % 10 for k in range(length, -1, -1)], 1)
        question = torch.cat([a + DIGIT0, torch.full((n, 1), PLUS), b + DIGIT0], 1)
        return question, digits + DIGIT0
    d = torch.randint(0, 10, (n, length), generator=generator)
    answer = d.flip(1) if task == "reverse" else d.sort(1).values
    return d + DIGIT0, answer + DIGIT0


def decode(tokens: torch.Tensor) -> str:
    """A row of token ids as text: digits, '+', '^' for BOS, '.' for padding."""
    chars = {PAD: ".", BOS: "^", PLUS: "+", **{DIGIT0 + i: str(i) for i in range(10)}}
    return "".join(chars.get(int(t), "?") for t in tokens)
