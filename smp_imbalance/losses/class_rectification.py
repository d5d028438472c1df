"""Class Rectification Loss (CRL) with batch-wise minority-class hard mining.

Dong, Gong & Zhu, *Imbalanced Deep Learning by Minority Class Incremental Rectification*,
TPAMI 2019. Per batch, the minority groups are profiled, hard positives and negatives of every
minority anchor are mined, and a rectification criterion on them regularises the base loss::

    loss = (1 - alpha) * base(logits, target) + alpha * CRL(logits, target[, features])

The maths lives in :mod:`smp_imbalance.losses.functional.mining`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smp_imbalance.losses._checks import check_choice, check_non_negative, check_tensor
from smp_imbalance.losses.functional import mining as M
from smp_imbalance.registry import register_loss

__all__ = ["ClassRectificationLoss", "imbalance_measure"]

MODES = ("multilabel", "multiclass")
CRITERIA = ("relative", "absolute", "distribution")
MININGS = ("class", "instance")
DEFAULT_ALPHA = 0.5


def imbalance_measure(
    counts: Sequence[float] | torch.Tensor, num_samples: int | None = None
) -> float:
    """Omega_imb: the minimum fraction of samples that would have to change class for the class
    distribution to become uniform.

    * single-label (``num_samples`` is None): with class fractions ``q_c = n_c / sum(n)``,
      ``Omega = sum_c max(0, q_c - 1/C) = 1/2 sum_c |q_c - 1/C|``, the total-variation distance to
      the uniform distribution, in ``[0, 1 - 1/C]``.
    * multi-label (``num_samples`` given): each label is its own binary attribute (present with
      fraction ``q_c = n_c / num_samples``); the same measure of the binary distribution
      ``(q_c, 1 - q_c)`` against ``(1/2, 1/2)`` is ``|q_c - 1/2|``, and ``Omega`` is its mean
      over labels, in ``[0, 1/2]``. The mean (not a sum, not one 28-way distribution) matches how
      the multi-label base loss weighs labels: BCE averages ``C`` independent binary problems.

    For the Human Protein Atlas counts (28 labels, 31072 images) this gives about 0.44, where the
    ``min(count) / max(count)`` rule gives 8.5e-4 (and a CRL weight of ~1e-5 that does nothing).
    """
    c = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if c.numel() < 1 or not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        raise ValueError("class_counts must be a non-empty sequence of finite counts >= 0")
    if num_samples is None:
        total = c.sum()
        if total <= 0:
            raise ValueError("class_counts sum to 0")
        q = c / total
        return float((q - 1.0 / c.numel()).clamp_min(0).sum())
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if bool((c > num_samples).any()):
        raise ValueError(f"a class count exceeds num_samples={num_samples}")
    return float(((c / num_samples) - 0.5).abs().mean())


@register_loss(name="crl")
class ClassRectificationLoss(nn.Module):
    """Class Rectification Loss with batch-wise minority hard mining (multi-label / single-label).

    ``loss = (1 - alpha) * base + alpha * CRL``.

    **Profiling** (per batch of ``N``). Multi-label: every label is its own binary attribute;
    its rarer value (present, or absent when fewer samples lack the label; ties: present) with
    count ``n`` is a minority group when ``2 <= n <= rho * N``; the score of a sample on the group
    is ``sigmoid(z_c)`` (present) or ``1 - sigmoid(z_c)`` (absent). A target entry counts as
    present when ``>= 0.5``. Single-label: classes sorted by batch count, ascending, ties by
    class index; the longest prefix with cumulative count ``<= rho * N`` is minority, keeping
    classes with ``>= 2`` samples; score ``softmax(z)_c``.

    **Mining** (for each anchor ``a`` of each minority group ``g``; ``k`` each, fewer when fewer
    exist). ``mining="class"``: hard positives are the other members with the LOWEST score on
    ``g``, hard negatives the non-members with the HIGHEST score; ``d(a, p) = max(0, s_a - s_p)``,
    ``d(a, n) = s_a - s_n`` (signed, so raising a negative's score never lowers the loss).
    ``mining="instance"``: positives are the farthest other members, negatives the nearest
    non-members in ``features`` (Euclidean); ``d`` is the feature distance, between L2-normalised
    features by default (``normalize_features``), so that ``d`` lies in ``[0, 2]`` whatever the
    backbone's feature scale and ``margin`` keeps one meaning across models.

    **Criteria** (means over what was mined, pooled over groups):

    * ``relative``: ``mean_T max(0, margin + d(a,p) - d(a,n))`` over all triplets
      (class-level: ``max(0, margin + s_n - min(s_a, s_p))``);
    * ``absolute``: ``1/2 [mean_P d(a,p)^2 + mean_Q max(0, margin - d(a,n))^2]``;
    * ``distribution``: histogram loss, per group ``sum_r h-_r sum_{q>=r} h+_q`` of soft
      (triangular, ``bins`` nodes) histograms of positive and negative distances, averaged over
      groups; nodes span ``[-1, 1]`` (class-level) or ``[0, 2]`` (instance-level, on L2-normalised
      features).

    No minority group or no valid triplet gives ``CRL = 0`` attached to the graph.

    Args:
        mode: ``"multilabel"`` (target ``(N, C)`` float multi-hot) or ``"multiclass"`` (target
            ``(N,)`` integer class indices); ``None`` infers it from each target's shape and
            dtype, and from ``class_counts`` with ``num_samples`` (multi-label).
            ``class_counts`` without ``num_samples`` need ``mode="multiclass"``: the counts
            alone cannot tell the two apart, so that raises ``ValueError`` at construction.
        alpha: weight of the CRL term in ``[0, 1]``. Default: ``eta * imbalance_measure(...)``
            when ``class_counts`` is given, else 0.5.
        class_counts: per-class sample counts of the training set, to derive ``alpha``.
        num_samples: number of training samples (multi-label ``class_counts`` need it).
        eta: scale of the imbalance measure, ``alpha = eta * Omega_imb``.
        criterion: ``"relative"``, ``"absolute"`` or ``"distribution"``.
        mining: ``"class"`` (scores) or ``"instance"`` (needs ``features`` in ``forward``, or
            ``features_from``; without either, a call ``criterion(logits, target)`` such as timm's
            ``MultiLabelClassificationTask`` makes raises a ``ValueError``, never falls back).
        k: number of hard positives and of hard negatives per anchor.
        rho: minority threshold, a fraction of the batch in ``(0, 1)``.
        margin: margin of the relative and absolute criteria (score units for class-level
            mining; for instance-level, distance units on the unit sphere, or raw feature units
            with ``normalize_features=False``).
        bins: number of histogram nodes of the distribution criterion.
        base: the base loss: ``None`` (BCE-with-logits for multi-label, cross-entropy for
            single-label), a registered loss name (see ``smp_imbalance.list_losses``) or a module
            / callable taking ``(logits, target)``.
        sync_dist: profile and mine over the batch gathered from all processes of the default
            ``torch.distributed`` group (every rank must have the same batch size and call
            backward); a no-op without an initialised process group.
        features_from: a timm model (anything with ``get_classifier()``) for instance-level
            mining in hosts that pass no features: a forward pre-hook on its classifier keeps the
            classifier's input -- the pooled pre-logits features, what
            ``forward_head(x, pre_logits=True)`` returns -- and the next ``forward`` called
            without ``features`` uses (and clears) it. Only with ``mining="instance"``.
        normalize_features: instance-level mining on L2-normalised features (default). With
            ``False`` the relative and absolute criteria use the raw features, so ``margin``
            must match their scale (pooled CNN features have norms of tens: a margin of 0.5
            is then almost no margin, and the hinge pushes the feature scale instead). The
            distribution criterion always normalises (its histogram spans ``[0, 2]``).
        fused: opt-in, for the default configuration (multi-label, class-level, relative):
            compute the CRL term as one ``torch.compile(fullgraph=True)`` graph that returns
            the value and its gradient together (the backward is one multiply), with
            single-threaded kernels (the tensors are ``(N, C)``: too small to gain from
            threads, and on a shared CPU each parallel region waits for the slowest thread)
            (a :class:`~smp_imbalance.losses._compile.FusedKernel`: a one-time compile of seconds,
            once more when the batch size first changes; an eager fallback with one warning
            where compilation is unavailable; eager inside a caller's own ``torch.compile``).
            ``False`` (default), or ``SMP_IMBALANCE_COMPILE=0``, runs the same maths eagerly.

    Defaults: ``alpha=0.5`` unless ``class_counts`` derive it, class-level mining with the
    relative criterion, ``k=25``, ``rho=0.5``, ``margin=0.5``, BCE (multi-label) or CE
    (single-label) base, eager.

    Shapes:
        logits ``(N, C)``; target ``(N, C)`` or ``(N,)``; features ``(N, D)`` (instance-level
        mining only: passing them to a class-level loss is an error); output a scalar.
        Half and bfloat16 inputs are computed in float32, float64 stays float64.
    """

    def __init__(
        self,
        mode: str | None = None,
        alpha: float | None = None,
        *,
        class_counts: Sequence[float] | torch.Tensor | None = None,
        num_samples: int | None = None,
        eta: float = 1.0,
        criterion: str = "relative",
        mining: str = "class",
        k: int = 25,
        rho: float = 0.5,
        margin: float = 0.5,
        bins: int = 25,
        base: str | nn.Module | Callable[..., torch.Tensor] | None = None,
        sync_dist: bool = False,
        features_from: nn.Module | None = None,
        normalize_features: bool = True,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if mode is not None:
            check_choice("mode", mode, MODES)
        check_choice("criterion", criterion, CRITERIA)
        check_choice("mining", mining, MININGS)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho < 1:
            raise ValueError(f"rho must be a number in (0, 1), got {rho!r}")
        self.margin = check_non_negative("margin", margin)

        self.num_classes: int | None = None
        if class_counts is not None:
            if alpha is not None:
                raise ValueError(
                    "pass either alpha or class_counts (alpha = eta * Omega), not both"
                )
            check_non_negative("eta", eta)
            if mode is None and num_samples is None:
                raise ValueError(
                    "class_counts alone do not say whether they are multi-label or single-label "
                    "counts: pass num_samples=<training-set size> (multi-label counts), or "
                    "mode='multiclass' (single-label counts)"
                )
            if mode is None:
                mode = "multilabel"
            if mode == "multilabel" and num_samples is None:
                raise ValueError("multi-label class_counts need num_samples (the dataset size)")
            omega = imbalance_measure(class_counts, num_samples if mode == "multilabel" else None)
            alpha = eta * omega
            self.num_classes = len(torch.as_tensor(class_counts).flatten())
        elif num_samples is not None:
            raise ValueError("num_samples is only used with class_counts")
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r} (lower eta?)")
        if base is not None and not (isinstance(base, str) or callable(base)):
            raise TypeError(
                f"base must be None, a loss name or a callable, got {type(base).__name__}"
            )

        self.mode = mode
        self.alpha = float(alpha)
        self.criterion = criterion
        self.mining = mining
        self.k = k
        self.rho = float(rho)
        self.bins = bins
        self.sync_dist = sync_dist
        self.fused = bool(fused)
        self.normalize_features = bool(normalize_features)
        self.base = self._build_base(base)
        self._captured: torch.Tensor | None = None
        self._hook = None
        if features_from is not None:
            if mining != "instance":
                raise ValueError("features_from is only used by mining='instance'")
            get_classifier = getattr(features_from, "get_classifier", None)
            if not callable(get_classifier) or not isinstance(get_classifier(), nn.Module):
                raise TypeError(
                    "features_from must be a timm model with get_classifier() returning its "
                    f"classifier module, got {type(features_from).__name__}"
                )
            self._hook = get_classifier().register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._captured = args[0]

    def detach_features_hook(self) -> None:
        """Remove the hook installed by ``features_from`` (no-op without one)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._captured = None

    @staticmethod
    def _build_base(base: str | nn.Module | Callable[..., torch.Tensor] | None) -> Any:
        if isinstance(base, str):
            from smp_imbalance.registry import create_loss  # lazy: the registry imports us

            return create_loss(base)
        return base

    @classmethod
    def from_class_counts(
        cls,
        counts: Sequence[float] | torch.Tensor,
        num_samples: int | None = None,
        eta: float = 1.0,
        **kwargs: Any,
    ) -> ClassRectificationLoss:
        """Build with ``alpha = eta * imbalance_measure(counts, num_samples)``; ``num_samples``
        given means multi-label counts (see :func:`imbalance_measure`)."""
        return cls(class_counts=counts, num_samples=num_samples, eta=eta, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, alpha={self.alpha:.4g}, criterion={self.criterion!r}, "
            f"mining={self.mining!r}, k={self.k}, rho={self.rho}, margin={self.margin}, "
            f"normalize_features={self.normalize_features}, fused={self.fused}"
        )

    # -- forward --------------------------------------------------------------------------------

    def _resolve_mode(self, logits: torch.Tensor, target: torch.Tensor) -> str:
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        if target.dim() == 1:
            if target.is_floating_point() or target.dtype == torch.bool:
                raise TypeError(
                    f"a 1-D target holds class indices and must be an integer tensor, got "
                    f"{target.dtype}"
                )
            mode = "multiclass"
        elif target.dim() == 2 and (target.is_floating_point() or target.dtype == torch.bool):
            mode = "multilabel"
        elif target.dim() == 2 and self.mode == "multilabel":
            mode = "multilabel"  # integer multi-hot, explicitly declared
        elif target.dim() == 2:
            raise ValueError(
                f"ambiguous integer target of shape {tuple(target.shape)}: pass multi-hot targets "
                "as float (multi-label) or class indices of shape (N,) (single-label), or set mode"
            )
        else:
            raise ValueError(
                f"target must have shape (N, C) (multi-label) or (N,) (single-label), got "
                f"{tuple(target.shape)}"
            )
        if self.mode is not None and mode != self.mode:
            raise ValueError(
                f"mode={self.mode!r} but target of shape {tuple(target.shape)} and dtype "
                f"{target.dtype} is {mode}"
            )
        expected = tuple(logits.shape) if mode == "multilabel" else (logits.shape[0],)
        if tuple(target.shape) != expected:
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} need a {mode} target of shape {expected}, "
                f"got {tuple(target.shape)}"
            )
        if mode == "multiclass" and logits.shape[1] < 2:
            raise ValueError(f"single-label logits need C >= 2 classes, got {tuple(logits.shape)}")
        return mode

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``target`` (``(N, C)`` multi-hot float or
        ``(N,)`` class indices); ``features`` ``(N, D)`` for instance-level mining."""
        check_tensor("logits", logits)
        if logits.dim() != 2:
            raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} classes but class_counts has {self.num_classes}"
            )
        mode = self._resolve_mode(logits, target)
        if target.device != logits.device:
            raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
        if self.mining == "instance":
            if features is None:
                features, self._captured = self._captured, None
            if features is None:
                raise ValueError(
                    "mining='instance' needs features (N, D), e.g. the pooled backbone features "
                    "model.forward_head(model.forward_features(x), pre_logits=True); for hosts "
                    "that call criterion(logits, target) only (timm's tasks) pass "
                    "features_from=model, or use mining='class'"
                )
            check_tensor("features", features)
            if features.dim() != 2 or features.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"features must have shape (N, D) with N={logits.shape[0]} as logits, got "
                    f"{tuple(features.shape)}"
                )
            if features.device != logits.device:
                raise ValueError(f"features are on {features.device}, logits on {logits.device}")
        elif features is not None:
            raise ValueError("features are only used by mining='instance'; this loss has 'class'")

        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        logits = logits.to(dtype)
        target = target.to(dtype) if mode == "multilabel" else target.long()
        if features is not None:
            features = features.to(dtype)
        if self.sync_dist:
            logits, target, features = _gather(logits, target, features)

        base = self._base_loss(logits, target, mode)
        crl = self.rectification(logits, target, mode, features)
        return (1 - self.alpha) * base + self.alpha * crl

    def _base_loss(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        if self.base is not None:
            return self.base(logits, target)
        if mode == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)

    def rectification(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        mode: str,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The CRL term alone, on validated inputs in the compute dtype."""
        if mode == "multilabel" and self.mining == "class" and self.criterion == "relative":
            return M.multilabel_class_relative(
                logits, target, self.k, self.rho, self.margin, compile=self.fused
            )
        profile = M.multilabel_groups if mode == "multilabel" else M.multiclass_groups
        groups = profile(logits, target, self.rho)
        if self.mining == "class" and self.criterion == "relative":
            return M.class_relative_criterion(groups, self.k, self.rho, self.margin)
        if self.mining == "class":
            mined = M.mine_class_level(groups, self.k, self.rho)
            lo, hi = -1.0, 1.0
        else:
            assert features is not None
            if self.normalize_features or self.criterion == "distribution":
                features = F.normalize(features, dim=1)
            mined = M.mine_instance_level(groups, features, self.k, self.rho)
            lo, hi = 0.0, 2.0
        if self.criterion == "relative":
            return M.relative_criterion(mined, self.margin)
        if self.criterion == "absolute":
            return M.absolute_criterion(mined, self.margin)
        return M.distribution_criterion(mined, self.bins, lo, hi)


def _gather(
    logits: torch.Tensor, target: torch.Tensor, features: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Concatenate the batches of all processes (rank order); gradients flow back to the local
    part (``all_gather``'s backward sums every rank's gradient for it, which DDP's averaging
    turns into the gradient of the global loss). A no-op without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return logits, target, features
    targets = [torch.empty_like(target) for _ in range(dist.get_world_size())]
    dist.all_gather(targets, target.contiguous())
    logits = _all_gather_autograd(logits)
    if features is not None:
        features = _all_gather_autograd(features)
    return logits, torch.cat(targets, 0), features


def _all_gather_autograd(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public one
        warnings.simplefilter("ignore", FutureWarning)
        out = torch.cat(all_gather(x), 0)
    if out.requires_grad:
        # the gloo backward (all-to-all) sends raw storage: a non-contiguous gradient slice (e.g.
        # from a transpose downstream) would arrive scrambled
        out.register_hook(lambda g: g.contiguous())
    return out
