"""The sequence models on generated tasks (fusedops.data.sequences): an LSTM next-token model
that sorts digit strings, and a Transformer encoder-decoder that reverses them. Training draws
fresh examples every step; the held-out test set comes from another seed, and any training
example equal to a test question is dropped, so the test questions are never seen."""
import torch

from .. import models as M
from ..data import sequences as S
from .report import LossLog, Progress, Result


def _code(questions: torch.Tensor) -> torch.Tensor:
    """One integer per question (its tokens as digits of base VOCAB), to test membership."""
    place = S.VOCAB ** torch.arange(questions.shape[1] - 1, -1, -1)
    return (questions * place).sum(1)


class _Batches:
    def __init__(self, task, length, batch, seed, n_test):
        self.task, self.length, self.batch = task, length, batch
        self.g = torch.Generator().manual_seed(seed)
        self.test = S.make_task(task, n_test, length, torch.Generator().manual_seed(seed + 10**6))
        self.seen = _code(self.test[0])

    def next(self):
        q, a = S.make_task(self.task, self.batch, self.length, self.g)
        keep = ~torch.isin(_code(q), self.seen)
        return q[keep], a[keep]


def _train(model, batches, steps, lr, loss_fn, log, desc, progress):
    opt = M.make_optimizer("adam", model.parameters(), lr=lr, backend=model.backend)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / steps))
    bar = Progress(steps, desc, progress)
    model.train()
    for step in range(1, steps + 1):
        loss = loss_fn(*batches.next())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.add("train", step, loss.item())
        bar.update(loss=loss.item())
    bar.close()
    model.eval()


def rnn(args):
    """Sort strings of 8 digits with an LSTM next-token model: it reads the digits and BOS,
    then writes the sorted digits one by one (greedy)."""
    L = 8
    batches = _Batches("sort", L, 128, args.seed, 1000)
    torch.manual_seed(args.seed)
    model = M.RNN(32, 128, S.VOCAB, cell="lstm", vocab_size=S.VOCAB, task="next_token",
                  backend=args.backend)

    def loss_fn(q, a):
        seq = torch.cat([q, torch.full((len(q), 1), S.BOS), a], 1)
        target = seq[:, 1:].clone()
        target[:, :L] = -100  # only the answer is predicted
        return model.loss(seq[:, :-1], target)

    log = LossLog()
    _train(model, batches, args.epochs or (20 if args.quick else 1000), 3e-3, loss_fn, log,
           "rnn", not args.no_progress)
    q, a = batches.test
    got = model.generate(torch.cat([q, torch.full((len(q), 1), S.BOS)], 1), L)
    exact = (got == a).all(1).float().mean().item()
    print(f"e.g. {S.decode(q[0])} -> {S.decode(got[0])} (want {S.decode(a[0])})")
    return [Result("held-out exact match (sort 8 digits)", exact, 0.99)], log


def transformer(args):
    """Reverse strings of 10 digits with a Transformer encoder-decoder (d_model 64, 4 heads,
    2+2 pre-norm layers), greedy decoding."""
    L = 10
    batches = _Batches("reverse", L, 64, args.seed, 1000)
    torch.manual_seed(args.seed)
    model = M.Transformer(S.VOCAB, S.VOCAB, d_model=64, nhead=4, num_encoder_layers=2,
                          num_decoder_layers=2, dim_feedforward=128, dropout=0.0,
                          norm_first=True, max_len=32, pad_idx=S.PAD, backend=args.backend)

    def loss_fn(q, a):
        return model.loss(q, torch.cat([torch.full((len(q), 1), S.BOS), a], 1))

    log = LossLog()
    _train(model, batches, args.epochs or (20 if args.quick else 500), 3e-3, loss_fn, log,
           "transformer", not args.no_progress)
    q, a = batches.test
    got = model.greedy_decode(q, S.BOS, L)
    exact = (got == a).all(1).float().mean().item()
    print(f"e.g. {S.decode(q[0])} -> {S.decode(got[0])} (want {S.decode(a[0])})")
    return [Result("held-out exact match (reverse 10 digits)", exact, 0.99)], log
