"""`lre_cc_toolchain_config` for Bazel 9+.

Everything from rules_cc: Bazel 9 removed cc_common and CcToolchainConfigInfo
from the global namespace.
"""

load("@rules_cc//cc:action_names.bzl", "ACTION_NAMES")
load(
    "@rules_cc//cc:cc_toolchain_config_lib.bzl",
    "feature",
    "flag_group",
    "flag_set",
    "tool_path",
    "with_feature_set",
)
load("@rules_cc//cc/common:cc_common.bzl", "cc_common")
load("@rules_cc//cc/toolchains:cc_toolchain_config_info.bzl", "CcToolchainConfigInfo")
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
