"""`lre_cc_toolchain_config` for Bazel < 8.

Toolchain-config library and action names from @bazel_tools; cc_common and
CcToolchainConfigInfo are Bazel globals.
"""

load("@bazel_tools//tools/build_defs/cc:action_names.bzl", "ACTION_NAMES")
load(
    "@bazel_tools//tools/cpp:cc_toolchain_config_lib.bzl",
    "feature",
    "flag_group",
    "flag_set",
    "tool_path",
    "with_feature_set",
)
load(":toolchain_config.bzl", "ATTRS", "build_cc_toolchain_config")

_API = struct(
    ACTION_NAMES = ACTION_NAMES,
    CcToolchainConfigInfo = CcToolchainConfigInfo,
    cc_common = cc_common,
    feature = feature,
    flag_group = flag_group,
    flag_set = flag_set,
    tool_path = tool_path,
    with_feature_set = with_feature_set,
)

def _impl(ctx):
    return build_cc_toolchain_config(ctx, _API)

lre_cc_toolchain_config = rule(
    implementation = _impl,
    attrs = ATTRS,
    provides = [CcToolchainConfigInfo],
)
