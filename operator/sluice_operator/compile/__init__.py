"""The compiler: a namespace's Sluice resources → one ``SidecarConfig``, its hash, and problems.

Purely computational, no side-effects; the caller (CLI or kopf handlers) performs the IO.
"""

from .compiler import CompileResult, Held, Problem, compile_namespace

__all__ = ["CompileResult", "Held", "Problem", "compile_namespace"]
