"""Offline stand-in for @rules_cc//cc:defs.bzl (Debian Bazel 4.2.3 only).

Forwards the public C/C++ rule macros to the native rules built into Bazel 4.
It exists only to run this repository offline; the real rules_cc is used
everywhere else.
"""

load("//cc:globals.bzl", "GLOBALS")

# Bazel 4's --incompatible_load_cc_rules_from_bzl accepts native cc rules only
# when they carry this tag, which is what the real rules_cc adds.
_TAG = "__CC_RULES_MIGRATION_DO_NOT_USE_WILL_BREAK__"

def _tagged(attrs):
    attrs["tags"] = (attrs.get("tags") or []) + [_TAG]
    return attrs

def cc_binary(**attrs):
    native.cc_binary(**_tagged(attrs))

def cc_import(**attrs):
    native.cc_import(**_tagged(attrs))

def cc_library(**attrs):
    native.cc_library(**_tagged(attrs))

def cc_proto_library(**attrs):
    native.cc_proto_library(**_tagged(attrs))

def cc_test(**attrs):
    native.cc_test(**_tagged(attrs))

def cc_toolchain(**attrs):
    native.cc_toolchain(**_tagged(attrs))

def cc_toolchain_suite(**attrs):
    native.cc_toolchain_suite(**_tagged(attrs))

def fdo_prefetch_hints(**attrs):
    native.fdo_prefetch_hints(**_tagged(attrs))

def fdo_profile(**attrs):
    native.fdo_profile(**_tagged(attrs))

def objc_import(**attrs):
    native.objc_import(**_tagged(attrs))

def objc_library(**attrs):
    native.objc_library(**_tagged(attrs))

cc_common = GLOBALS.cc_common
CcInfo = GLOBALS.CcInfo
CcToolchainConfigInfo = GLOBALS.CcToolchainConfigInfo
