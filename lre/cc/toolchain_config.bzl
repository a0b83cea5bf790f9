"""Shared implementation of `lre_cc_toolchain_config`.

A deliberately small C/C++ toolchain configuration: tools are given as
absolute paths (`tool_paths`, no action_configs), so Bazel adds its legacy
features (include paths, defines, pic, libraries_to_link, ...) and this file
only contributes flags and capability features.

The symbols this needs moved between Bazel releases, and Starlark cannot load
conditionally, so they are passed in as `api` (a struct) by one of the entry
files: bazel_pre8.bzl (Bazel < 8), bazel8.bzl (Bazel 8) or bazel9.bzl (9+).
`api` has the fields: ACTION_NAMES, CcToolchainConfigInfo, cc_common, feature,
flag_group, flag_set, tool_path, with_feature_set.
"""

# Bazel 4.2.3 rejects a toolchain whose tool_paths lack one of these tools
# ("Tool path for 'X' is missing"), even if no action ever runs it. A tool that
# is absent from the `tool_paths` attribute is pointed at this path instead, so
# the toolchain is accepted and an action that really needs the tool fails
# loudly. All other tools (llvm-cov, dwp, ...) are passed through only if given.
MISSING_TOOL = "/bin/false"

REQUIRED_TOOLS = ["ar", "cpp", "gcc", "gcov", "ld", "nm", "objdump", "strip"]

ATTRS = {
    "abi_libc_version": attr.string(mandatory = True),
    "abi_version": attr.string(mandatory = True),
    "compile_flags": attr.string_list(),
    "compiler": attr.string(mandatory = True, values = ["clang", "gcc"]),
    "compiler_version": attr.string(),
    "coverage_compile_flags": attr.string_list(),
    "coverage_link_flags": attr.string_list(),
    "cpu": attr.string(mandatory = True),
    "cxx_builtin_include_directories": attr.string_list(),
    "cxx_flags": attr.string_list(),
    "dbg_compile_flags": attr.string_list(),
    "link_flags": attr.string_list(),
    "link_libs": attr.string_list(),
    "opt_compile_flags": attr.string_list(),
    "opt_link_flags": attr.string_list(),
    "target_libc": attr.string(mandatory = True),
    "target_triple": attr.string(mandatory = True),
    "tool_paths": attr.string_dict(mandatory = True),
    "unfiltered_compile_flags": attr.string_list(),
}

def _action_groups(names):
    c = [names.c_compile]
    cxx = [
        names.cpp_compile,
        names.cpp_header_parsing,
        names.cpp_module_codegen,
        names.cpp_module_compile,
        names.linkstamp_compile,
    ]
    return struct(
        all_compile = c + cxx + [
            names.assemble,
            names.lto_backend,
            names.preprocess_assemble,
        ],
        cxx_compile = cxx,
        link = [
            names.cpp_link_dynamic_library,
            names.cpp_link_executable,
            names.cpp_link_nodeps_dynamic_library,
        ],
    )

def _feature(api, name, flag_sets = [], enabled = False):
    """A feature from (actions, flags, with_features) triples; empty flags are dropped."""
    return api.feature(
        name = name,
        enabled = enabled,
        flag_sets = [
            api.flag_set(
                actions = actions,
                flag_groups = [api.flag_group(flags = flags)],
                with_features = with_features,
            )
            for actions, flags, with_features in flag_sets
            if flags
        ],
    )

def _tool_paths(api, given):
    paths = {tool: MISSING_TOOL for tool in REQUIRED_TOOLS}
    paths.update(given)
    return [api.tool_path(name = name, path = paths[name]) for name in sorted(paths)]

def build_cc_toolchain_config(ctx, api):
    """Implementation of every `lre_cc_toolchain_config` rule.

    Args:
      ctx: the rule context; its attributes are described by ATTRS.
      api: struct of the Bazel-version specific symbols (see module doc).

    Returns:
      A list with the CcToolchainConfigInfo provider.
    """
    a = ctx.attr
    actions = _action_groups(api.ACTION_NAMES)
    opt = [api.with_feature_set(features = ["opt"])]
    dbg = [api.with_feature_set(features = ["dbg"])]

    features = [
        _feature(api, "default_compile_flags", enabled = True, flag_sets = [
            (actions.all_compile, a.compile_flags, []),
            (actions.cxx_compile, a.cxx_flags, []),
            (actions.all_compile, a.opt_compile_flags, opt),
            (actions.all_compile, a.dbg_compile_flags, dbg),
        ]),
        _feature(api, "default_link_flags", enabled = True, flag_sets = [
            (actions.link, a.link_flags + a.link_libs, []),
            (actions.link, a.opt_link_flags, opt),
        ]),
        _feature(api, "unfiltered_compile_flags", enabled = True, flag_sets = [
            (actions.all_compile, a.unfiltered_compile_flags, []),
        ]),
        _feature(api, "coverage", flag_sets = [
            (actions.all_compile, a.coverage_compile_flags, []),
            (actions.link, a.coverage_link_flags, []),
        ]),
        # Capabilities: position independent code and dynamic linking, which
        # cc_test and `--dynamic_mode` rely on.
        _feature(api, "supports_pic", enabled = True),
        _feature(api, "supports_dynamic_linker", enabled = True),
        # Enabled by Bazel from --compilation_mode; gate the opt/dbg flags.
        _feature(api, "opt"),
        _feature(api, "dbg"),
    ]

    return [api.cc_common.create_cc_toolchain_config_info(
        ctx = ctx,
        features = features,
        cxx_builtin_include_directories = a.cxx_builtin_include_directories,
        toolchain_identifier = "lre-%s-%s" % (a.compiler, a.compiler_version or "unknown"),
        host_system_name = "local",
        target_system_name = a.target_triple,
        target_cpu = a.cpu,
        target_libc = a.target_libc,
        compiler = a.compiler,
        abi_version = a.abi_version,
        abi_libc_version = a.abi_libc_version,
        tool_paths = _tool_paths(api, a.tool_paths),
    )]
