"""`bound`: a function with some arguments fixed, equal to another built from equal parts.

Cells and layers are NamedTuples of functions and are static arguments of
``jax.jit`` (and keys of ``rj.scan``'s cache of compiled programs), so two
built with equal options must be equal and hash alike. A closure made inside
a factory is a new object on every call; a module-level function with its
options bound by `bound` is not.
"""

from __future__ import annotations

import functools


class bound(functools.partial):
    """``functools.partial`` compared by value: same function, equal arguments.

    Bound arguments must be hashable (options: numbers, strings, tuples,
    dtypes, functions, cells), as a ``jit`` static argument must be.

    Example:
        >>> import operator
        >>> bound(operator.add, 1) == bound(operator.add, 1), bound(operator.add, 1)(2)
        (True, 3)
        >>> len({bound(operator.add, 1), bound(operator.add, 1), bound(operator.add, 2)})
        2
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return (self.func, self.args, self.keywords) == (other.func, other.args, other.keywords)

    def __hash__(self) -> int:
        return hash((self.func, self.args, tuple(sorted(self.keywords.items()))))
