# Local Remote Execution: the dev shell, the toolchain images and their NativeLink workers.
#
#   nix develop                                   the shell for `cargo xtask` and Bazel 7
#   packages.x86_64-linux.lre-cc, lre-java        toolchain images (nix2container), tagged by their
#                                                 derivation's hash; `meta.Env` is the environment
#                                                 `cargo xtask generate` probes (source = "nix")
#   packages.x86_64-linux.nativelink-worker-lre-cc, nativelink-worker-lre-java
#                                                 the same images as NativeLink workers
#                                                 (lre/create-worker.nix), same tags
#   packages.x86_64-linux.nativelink              NativeLink's own image for the Kubernetes example
#
# Each image has `.copyTo` (nix2container): `cargo xtask deploy` runs
# `nix run .#<image>.copyTo -- docker://localhost:5001/<image>:<tag>`.
{
  description = "Local Remote Execution: one toolchain for local and remote Bazel builds";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    nix2container = {
      url = "github:nlewo/nix2container";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    # The tag must match `images:` in kubernetes/kustomization.yaml (a test checks it).
    nativelink.url = "github:TraceMachina/nativelink/v1.4.0";
  };

  outputs = { self, nixpkgs, nix2container, nativelink }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      inherit (nix2container.packages.${system}.nix2container) buildImage;
      nativelinkPackage = nativelink.packages.${system}.nativelink;
      nativelinkTag = "1.4.0";

      createWorker = import ./lre/create-worker.nix {
        inherit pkgs buildImage;
        nativelink = nativelinkPackage;
        revision = self.rev or self.dirtyRev or "dirty";
      };
      lre-cc = import ./lre/lre-cc.nix { inherit pkgs buildImage; };
      lre-java = import ./lre/lre-java.nix { inherit pkgs buildImage; };
    in
    {
      packages.${system} = {
        inherit lre-cc lre-java;
        nativelink-worker-lre-cc = createWorker lre-cc;
        nativelink-worker-lre-java = createWorker lre-java;
        nativelink = buildImage {
          name = "nativelink";
          tag = nativelinkTag;
          copyToRoot = [
            (pkgs.buildEnv {
              name = "nativelink-programs";
              paths = [ nativelinkPackage ];
              pathsToLink = [ "/bin" ];
            })
          ];
          config = {
            Entrypoint = [ "/bin/nativelink" ];
            Env = [ "PATH=/bin" ];
            User = "65534:65534";
          };
        };
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = [
          pkgs.bazel_7
          pkgs.cargo
          pkgs.rustc
          pkgs.clippy
          pkgs.rustfmt
          pkgs.kubectl
          pkgs.kind
          pkgs.skopeo
          pkgs.docker-client
          nativelinkPackage
        ];
        # The xtask finds NativeLink on PATH; this names it explicitly for `cargo xtask up`.
        LRE_NATIVELINK = "${nativelinkPackage}/bin/nativelink";
      };
    };
}
