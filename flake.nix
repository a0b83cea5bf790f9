# A first dev shell for LRE. The Nix issue fills in the toolchain images (lre-cc, lre-java),
# the createWorker transform and NativeLink; until then this only provides the tools the
# xtask drives, so `nix develop` followed by `cargo xtask doctor` works.
{
  description = "Local Remote Execution: one toolchain for local and remote Bazel builds";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      devShells.${system}.default = pkgs.mkShell {
        packages = [
          pkgs.bazel_7
          pkgs.cargo
          pkgs.rustc
          pkgs.kubectl
          pkgs.kind
          pkgs.skopeo
        ];
      };
    };
}
