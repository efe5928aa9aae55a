"""The classic models on the data sets that ship inside scikit-learn (fusedops.data.tabular:
no download) and on MNIST from IDX files: linreg, logreg, mlp, cnn."""
import math

import torch

from .. import models as M
from ..data import tabular
from .report import LossLog, Progress, Result


def _split(X, y, seed, stratify=True):
    """Train (72%) / validation (8%) / test (20%) pairs, float32 features."""
    test, val, train = tabular.split(y, [0.2, 0.08], seed, stratify)
    X = X.float()
    y = y if stratify else y.float()
    return (X[train], y[train]), (X[val], y[val]), (X[test], y[test])


def _standardize(train, *others):
    mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
    return [(a - mean) / std for a in (train, *others)]


@torch.no_grad()
def _eval_loss(model, x, y, batch=1024):
    model.eval()
    total = sum(model.loss(x[i:i + batch], y[i:i + batch]).item() * len(x[i:i + batch])
                for i in range(0, len(x), batch))
    model.train()
    return total / len(x)


@torch.no_grad()
def accuracy(model, x, y, batch=1024):
    model.eval()
    hits = sum((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum().item()
               for i in range(0, len(x), batch))
    model.train()
    return hits / len(x)


def shift_images(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image [C, H, W] moved by -1, 0 or 1 pixel in each direction (zeros come in):
    the augmentation the small digit set needs."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, n), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def fit(model, train, val, *, epochs, batch, opt, sched=None, penalty=None, patience=None,
        log, desc, progress=True, seed=0, augment=None):
    """Mini-batch training with the validation loss checked after each epoch; with
    `patience`, early stopping restores the weights of the best validation loss; `augment`
    (batch, generator) -> batch transforms each training batch."""
    x, y = train
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / batch)
    stopper = M.EarlyStopping(patience) if patience else None
    bar = Progress(epochs * steps_per_epoch, desc, progress)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = x[idx] if augment is None else augment(x[idx], g)
            loss = model.loss(xb, y[idx])
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            log.add("train", step, loss.item())
            bar.update(loss=loss.item())
        val_loss = _eval_loss(model, *val)
        log.add("validation", step, val_loss)
        if sched is not None:
            sched.step()
        if stopper is not None and stopper.step(val_loss, model):
            break
    bar.close()
    if stopper is not None:
        stopper.restore(model)
    return step


# ---- linear regression ------------------------------------------------------------------------


def linreg(args):
    """Diabetes (442 patients, 10 features): gradient descent on the mean squared error
    against the closed-form least-squares fit."""
    X, y = tabular.load_diabetes()
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _split(X, y, args.seed, stratify=False)
    x_tr, x_va, x_te = _standardize(x_tr, x_va, x_te)
    mu, sd = y_tr.mean(), y_tr.std()
    y_tr, y_va, y_te = [(a - mu) / sd for a in (y_tr, y_va, y_te)]

    def r2(pred, target):
        return 1.0 - ((pred - target) ** 2).sum().item() / ((target - target.mean()) ** 2).sum().item()

    A = torch.cat([x_tr, torch.ones(len(x_tr), 1)], 1).double()
    coef = torch.linalg.lstsq(A, y_tr.double().unsqueeze(1)).solution.squeeze(1)
    best = r2((torch.cat([x_te, torch.ones(len(x_te), 1)], 1).double() @ coef).float(), y_te)

    torch.manual_seed(args.seed)
    model = M.LinearRegression(x_tr.shape[1], backend=args.backend)
    opt = M.make_optimizer("momentum", model.parameters(), lr=0.05, backend=args.backend)
    steps = args.epochs or (50 if args.quick else 1500)
    log, bar = LossLog(), Progress(steps, "linreg", not args.no_progress)
    for step in range(1, steps + 1):  # full-batch gradient descent
        loss = model.loss(x_tr, y_tr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.add("train", step, loss.item())
        if step % 25 == 0:
            with torch.no_grad():
                log.add("validation", step, model.loss(x_va, y_va).item())
        bar.update(mse=loss.item())
    bar.close()
    with torch.no_grad():
        got = r2(model(x_te), y_te)
    return [Result("|test R^2 - least-squares test R^2|", abs(got - best), 0.01,
                   higher_is_better=False,
                   note=f"R^2 {got:.4f}, closed-form least squares {best:.4f}")], log


# ---- logistic regression ----------------------------------------------------------------------


def logreg(args):
    """Breast cancer (569 tumours, 30 features, benign or malignant): logistic regression
    with an L2 penalty and exponential learning-rate decay."""
    X, y = tabular.load_breast_cancer()
    train, val, test = _split(X, y, args.seed)
    (x_tr, x_va, x_te) = _standardize(train[0], val[0], test[0])
    torch.manual_seed(args.seed)
    model = M.LogisticRegression(x_tr.shape[1], 2, backend=args.backend)
    opt = M.make_optimizer("sgd", model.parameters(), lr=0.5, backend=args.backend)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.97)
    log = LossLog()
    fit(model, (x_tr, train[1]), (x_va, val[1]), epochs=args.epochs or (2 if args.quick else 60),
        batch=64, opt=opt, sched=sched, penalty=lambda m: M.l2_penalty(m, 1e-2), log=log,
        desc="logreg", progress=not args.no_progress, seed=args.seed)
    with torch.no_grad():
        acc = (model.predict(x_te) == test[1]).float().mean().item()
    return [Result("test accuracy", acc, 0.95)], log


# ---- MLP ---------------------------------------------------------------------------------------


def _digits(args):
    X, y = tabular.load_digits()
    return _split(X / 16.0, y, args.seed)


def mlp(args):
    """Digits (1797 handwritten 8x8 images): MLP 64-256-128-10, ReLU, dropout, AdamW with
    weight decay, cosine learning-rate decay, early stopping, images shifted by up to a pixel."""
    if args.data:
        raise SystemExit("fusedops.examples mlp: --data (MNIST) is for the cnn example")
    train, val, test = _digits(args)
    torch.manual_seed(args.seed)
    model = M.MLP(64, [256, 128], 10, dropout=0.1, backend=args.backend)
    epochs = args.epochs or (2 if args.quick else 60)
    opt = M.make_optimizer("adamw", model.parameters(), lr=2e-3, weight_decay=1e-2,
                           backend=args.backend)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    log = LossLog()
    fit(model, train, val, epochs=epochs, batch=64, opt=opt, sched=sched, patience=15, log=log,
        desc="mlp", progress=not args.no_progress, seed=args.seed,
        augment=lambda x, g: shift_images(x.view(-1, 1, 8, 8), g).flatten(1))
    return [Result("test accuracy", accuracy(model, *test), 0.96)], log


# ---- CNN ---------------------------------------------------------------------------------------


def cnn(args):
    """Digits (8x8) by default, or MNIST (28x28) from `--data DIR` holding the four IDX files:
    CNN.small() and CNN.mnist() (`--arch` picks one), Adam with cosine learning-rate decay,
    early stopping; the digits are shifted by up to a pixel each time they are seen."""
    archs = ("small", "mnist") if args.arch == "both" else (args.arch,)
    if args.data:
        from ..data.idx import load_mnist

        d = load_mnist(args.data)
        (x, y), test = d["train"], d["test"]
        g = torch.Generator().manual_seed(args.seed)
        order = torch.randperm(len(x), generator=g)
        n_val = max(1, len(x) // 12)
        val, train = (x[order[:n_val]], y[order[:n_val]]), (x[order[n_val:]], y[order[n_val:]])
        size, epochs, batch, source = x.shape[-2:], args.epochs or (1 if args.quick else 3), 64, "MNIST"
        augment = None
    else:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _digits(args)
        img = lambda a: a.reshape(-1, 1, 8, 8)
        train, val, test = (img(x_tr), y_tr), (img(x_va), y_va), (img(x_te), y_te)
        size, epochs, batch, source = (8, 8), args.epochs or (2 if args.quick else 60), 32, "digits"
        augment = shift_images
    results, log = [], LossLog()
    for arch in archs:
        torch.manual_seed(args.seed)
        model = getattr(M.CNN, arch)(image_size=tuple(size), backend=args.backend)
        opt = M.make_optimizer("adam", model.parameters(), lr=2e-3, backend=args.backend)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        arch_log = LossLog()
        fit(model, train, val, epochs=epochs, batch=batch, opt=opt, sched=sched, patience=15,
            log=arch_log, desc=f"cnn {arch}", progress=not args.no_progress, seed=args.seed,
            augment=augment)
        for name, pts in arch_log.curves.items():
            log.curves[f"{arch} {name}"] = pts
        results.append(Result(f"test accuracy on {source} (CNN.{arch}())",
                              accuracy(model, *test), 0.98))
    return results, log
