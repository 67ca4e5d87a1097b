"""What the ``sequential`` backend keeps of a forward sweep for the backward one: a type per policy.

The custom backward pass of `rnn_jax.backends.sequential` runs ``combine``'s
VJP at every step. A residual policy (`Residuals`) decides how the backward
pass gets that VJP back, in three moves:

- ``keep``: one forward step's ``combine``, and what it keeps of the step
  (a typed value: `Activations`, `CarriesAndPre`, `UntiedCarries`);
- ``points``: per chunk of the reverse sweep, the fed-back states of its
  steps (for the recurrent kernel's gradient) and each step's point of
  ``combine`` (`StoredPullback`, `Point`, `SummedPoint`);
- ``pullback_of``: a point's pullback of ``combine``, kept or formed again.

The policies, and the names ``Sequential(residuals=...)`` knows them by (`POLICIES`):

- ``"store"``, `KeepActivations`: ``combine``'s VJP residuals (the gate
  activations): no activation evaluated twice, most memory;
- ``"recompute"``, `KeepPreActivations`: the carries and the recurrent
  pre-activations; ``combine`` is re-run per step (where it reads ``xp`` and
  the pre-activation only through their sum, the sum is kept and the
  backward pass forms no projection);
- ``"carries"``, `KeepCarries`: the carries only; a chunk's pre-activations
  are re-formed by one matmul over its rows.

Carry leaves that are the step's output (``Layout.tied``: an LSTM's or GRU's
``h``, the valid steps being a prefix) are never kept by the last two: the
outputs of the step before hold them (`carries_entering`).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax.backends.masking import keep_where, restarted
from rnn_jax.backends.numerics import matmul

if TYPE_CHECKING:  # the sequential backend's types, which hold a policy
    from rnn_jax.backends.sequential import Layout, Saved


# ----------------------------------------------------------------------------- kept per step


class Activations(NamedTuple):
    """`KeepActivations`' residuals of a step: the fed-back state ``[B, R]`` and ``combine``'s
    pullback (a pytree holding its VJP residuals)."""

    fed: jax.Array
    pullback: Any


class CarriesAndPre(NamedTuple):
    """`KeepPreActivations`' residuals of a step: the carry leaves that are not outputs, and
    the pre-activation ``[B, G*H]`` (``xp + hu`` where ``combine`` reads only the sum, else
    ``hu``)."""

    untied: list
    pre: jax.Array


class UntiedCarries(NamedTuple):
    """`KeepCarries`' residuals of a step: the carry leaves that are not outputs."""

    untied: list


# ----------------------------------------------------------------------------- points of combine


class StoredPullback(NamedTuple):
    """A step's pullback of ``combine``, as the forward step kept it."""

    pullback: Any

    def pullback_of(self, layout: Layout, c_used):
        del layout, c_used
        return self.pullback


class Point(NamedTuple):
    """A step's ``combine`` arguments: its carry, projected input and recurrent
    pre-activation; the pullback comes from re-running ``combine`` there."""

    carry: Any
    xp: Any
    hu: jax.Array

    def pullback_of(self, layout: Layout, c_used):
        return jax.vjp(layout.combine, c_used, self.carry, self.xp, self.hu)[1]


class SummedPoint(NamedTuple):
    """A step's ``combine`` arguments where it reads ``xp`` and ``hu`` only as their sum
    ``pre``: re-run at ``(pre, 0)``, so no projection is formed again."""

    carry: Any
    pre: jax.Array

    def pullback_of(self, layout: Layout, c_used):
        hu = jnp.zeros_like(self.pre)
        return jax.vjp(layout.combine, c_used, self.carry, self.pre, hu)[1]


class Entering(NamedTuple):
    """What decides the carry entering each step besides the kept leaves: the output and
    validity of the step before (for the tied leaves; None where nothing is restored from
    the outputs) and the restarts (None: none)."""

    ys_before: jax.Array | None
    valid_before: jax.Array | None
    starts: jax.Array | None


# ----------------------------------------------------------------------------- the policies


class Residuals(abc.ABC):
    """A residual policy (see the module docstring). Stateless: one instance per policy."""

    @abc.abstractmethod
    def keep(self, layout: Layout, c_used, carry, xp_t, fed, hu):
        """``((new_carry, y), kept)`` of one forward step at ``carry`` (``fed`` its fed-back
        state, ``hu = fed @ kernel``)."""

    @abc.abstractmethod
    def points(self, layout: Layout, res: Saved, kept, xp, entering: Entering):
        """``(fed [K, B, R], points)`` of one chunk of the reverse sweep: ``kept`` its steps'
        residuals, ``xp`` their projected inputs, ``entering`` its part of `entering`."""

    @abc.abstractmethod
    def fed_of_all(self, layout: Layout, res: Saved, entering: Entering):
        """The fed-back states of every step ``[n, K, B, R]``."""

    def entering(self, layout: Layout, res: Saved, reverse: bool) -> Entering:
        """The `Entering` of every step ``[n, K, ...]``: only the restarts here."""
        del layout, reverse
        return Entering(None, None, res.chunks.starts)


class KeepActivations(Residuals):
    """``"store"``: ``combine``'s VJP residuals of every step."""

    def keep(self, layout, c_used, carry, xp_t, fed, hu):
        out, pullback = jax.vjp(layout.combine, c_used, carry, xp_t, hu)
        return out, Activations(fed, pullback)

    def points(self, layout, res, kept, xp, entering):
        del layout, res, xp, entering
        return kept.fed, StoredPullback(kept.pullback)

    def fed_of_all(self, layout, res, entering):
        del layout, entering
        return res.saved.fed


class RestoresCarries(Residuals):
    """A policy that keeps the carries that are not outputs, and restores the others from
    the outputs of the step before."""

    def untied(self, layout: Layout, carry) -> list:
        leaves = jax.tree.leaves(carry)
        return [c for c, t in zip(leaves, layout.tied, strict=True) if not t]

    @abc.abstractmethod
    def point(self, layout: Layout, res: Saved, kept, carry, fed, xp):
        """The chunk's `Point` (or `SummedPoint`) from its restored carries."""

    def points(self, layout, res, kept, xp, entering):
        carry = carries_entering(layout, res, kept.untied, entering)
        fed = layout.gates.fed_back(carry)
        return fed, self.point(layout, res, kept, carry, fed, xp)

    def fed_of_all(self, layout, res, entering):
        return layout.gates.fed_back(carries_entering(layout, res, res.saved.untied, entering))

    def entering(self, layout, res, reverse):
        """The restarts, and the outputs and validity of the step before each step for the
        tied carry leaves."""
        starts = res.chunks.starts
        if not any(layout.tied):
            return Entering(None, None, starts)
        first = jax.tree.leaves(res.carry0)[layout.tied.index(True)]
        ys_before = previous_steps(res.ys, first.astype(res.ys.dtype), reverse)
        valid = res.chunks.valid
        if valid is None:
            return Entering(ys_before, None, starts)
        batch = valid.shape[2:]
        return Entering(ys_before, previous_steps(valid, jnp.ones(batch, bool), reverse), starts)


class KeepPreActivations(RestoresCarries):
    """``"recompute"``: the carries and the pre-activations; ``combine`` re-run per step."""

    def keep(self, layout, c_used, carry, xp_t, fed, hu):
        del fed
        out = layout.combine(c_used, carry, xp_t, hu)
        pre = xp_t + hu if layout.summed else hu
        return out, CarriesAndPre(self.untied(layout, carry), pre)

    def point(self, layout, res, kept, carry, fed, xp):
        del res, fed
        return SummedPoint(carry, kept.pre) if layout.summed else Point(carry, xp, kept.pre)


class KeepCarries(RestoresCarries):
    """``"carries"``: the carries only; a chunk's pre-activations by one matmul over its rows."""

    def keep(self, layout, c_used, carry, xp_t, fed, hu):
        del fed
        out = layout.combine(c_used, carry, xp_t, hu)
        return out, UntiedCarries(self.untied(layout, carry))

    def point(self, layout, res, kept, carry, fed, xp):
        del kept
        return Point(carry, xp, matmul(fed, res.kernel, layout.out_dtype))


# The names of ``Sequential(residuals=...)``: the one place a name becomes a policy.
POLICIES: dict[str, Residuals] = {
    "store": KeepActivations(),
    "recompute": KeepPreActivations(),
    "carries": KeepCarries(),
}


# ----------------------------------------------------------------------------- restoring carries


def previous_steps(ys, first, reverse: bool):
    """Per chunk and step, the value of the step before in scan order.

    ``ys: [n, K, ...]`` (``n`` chunks of ``K`` steps); the step before the very
    first one gets ``first [...]``.

    Example:
        >>> ys = jnp.arange(6.0).reshape(3, 2)
        >>> previous_steps(ys, jnp.asarray(-1.0), reverse=False).tolist()
        [[-1.0, 0.0], [1.0, 2.0], [3.0, 4.0]]
    """
    if reverse:
        after = jnp.concatenate([ys[1:, :1], first[None, None]], axis=0)
        return jnp.concatenate([ys[:, 1:], after], axis=1)
    before = jnp.concatenate([first[None, None], ys[:-1, -1:]], axis=0)
    return jnp.concatenate([before, ys[:, :-1]], axis=1)


def carries_entering(layout: Layout, res: Saved, untied, entering: Entering):
    """The carries entering each step, from the kept leaves and the outputs of the step
    before (for tied leaves), restarts applied."""
    ys_before, valid_before = entering.ys_before, entering.valid_before
    untied = iter(untied)
    leaves = []
    for is_tied, leaf0 in zip(layout.tied, jax.tree.leaves(res.carry0), strict=True):
        if not is_tied:
            leaves.append(next(untied))
            continue
        # A step after one that does not count (only the first valid step of a reversed
        # scan, the valid steps being a prefix) starts from the initial carry.
        leaves.append(
            ys_before if valid_before is None else keep_where(valid_before, ys_before, leaf0)
        )
    carry = jax.tree.unflatten(layout.carry_tree, leaves)
    return restarted(entering.starts, res.restart, carry)
