"""Offline stand-in (Debian Bazel 4.2.3 only): Bazel 4's built-in C++ symbols.

Collected in a struct so other files can re-export them under their own name
(a file cannot write `cc_common = cc_common` at top level).
"""

GLOBALS = struct(
    CcInfo = CcInfo,
    CcToolchainConfigInfo = CcToolchainConfigInfo,
    cc_common = cc_common,
)
