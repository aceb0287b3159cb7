# Production image of altinn-events: `docker build -t altinn-events .`
#
# Two stages: a Rust builder and a distroless runtime holding only the binary
# (glibc, libgcc and CA certificates come with the base image). The image
# writes nothing at run time, so it runs with a read-only root filesystem, and
# as the distroless `nonroot` user (uid/gid 65532).

# Base images by digest: a tag is moved whenever its publisher rebuilds it,
# a digest names one image. The tags stay for the reader; the digest wins.
# Both are the digests public Dockerfiles pinned these tags to (the rust one
# their multi-platform index, August 2026); the machine this was written on
# has no registry access, so check them before a release and bump them with
# `docker buildx imagetools inspect <tag>` (docs/deploy.md, "Pin the base
# images by digest"), monthly and when Debian or distroless announce a fix.
#
# The rust tag matches the channel pinned in rust-toolchain.toml, so rustup
# finds that toolchain already installed and only adds the components it lists.
FROM rust:1.95.0-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS builder
WORKDIR /build

# cargo auditable embeds the binary's dependency list (every crate and
# version) in it, so scanners (`cargo audit bin`, syft, trivy) read what is
# in the image from the binary itself; CI makes the CycloneDX SBOM from the
# same list (.ci/sbom.py).
RUN cargo install --locked cargo-auditable --version 0.7.7

# Dependencies first, in their own layer: it is rebuilt only when the manifest,
# the lock file or the toolchain changes, not on every source edit. The dummy
# targets have the shape of the real ones (a library and a binary) so that
# cargo resolves and compiles the same dependency graph.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo auditable build --release --locked --no-default-features --features production \
    && rm -rf src

# The real sources. COPY keeps the files' own modification times, which can be
# older than the dummy build's outputs: touching the crate roots makes cargo
# rebuild the crate itself (the dependencies stay cached).
COPY src ./src
RUN touch -c src/main.rs src/lib.rs \
    && cargo auditable build --release --locked --no-default-features --features production \
    && install -D -m 0555 target/release/altinn-events /out/altinn-events

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=builder /out/altinn-events /usr/local/bin/altinn-events
USER 65532:65532
ENV EVENTS__LISTEN_ADDR=0.0.0.0:8080
# Panics may print backtraces (RUST_BACKTRACE), but library errors must not
# capture them: the Azure SDK builds an error, and so a stack trace, for
# every optional header a Cosmos response lacks.
ENV RUST_LIB_BACKTRACE=0
EXPOSE 8080
# The binary checks itself: distroless has no shell, curl or wget.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/altinn-events", "healthcheck", "--url", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["/usr/local/bin/altinn-events"]
CMD ["serve"]
