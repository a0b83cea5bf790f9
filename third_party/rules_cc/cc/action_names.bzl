"""Offline stand-in (Debian Bazel 4.2.3 only): same label as rules_cc's file."""

load("@bazel_tools//tools/build_defs/cc:action_names.bzl", _ACTION_NAMES = "ACTION_NAMES")

ACTION_NAMES = _ACTION_NAMES
