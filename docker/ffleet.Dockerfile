# The one ffleet image: every service (`ffleet run <service>`), the one-shot `ffleet provision`,
# and the healthcheck (`ffleet health`). The release binary is copied in, never compiled here:
# scripts/images.sh stages target/release/ffleet (built by scripts/setup.sh) as the build context.
# FFLEET_BASE_IMAGE is debian:bookworm-slim where a registry is reachable, or the local
# debootstrapped base (which already carries ffmpeg, so nothing is fetched while building).
ARG FFLEET_BASE_IMAGE=debian:bookworm-slim
FROM ${FFLEET_BASE_IMAGE}
RUN if ! command -v ffmpeg >/dev/null 2>&1; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg ca-certificates wget && rm -rf /var/lib/apt/lists/*; \
    fi \
 && mkdir -p /media /var/tmp/ffleet-work /run/ffleet
COPY ffleet /usr/local/bin/ffleet
ENV FFLEET_NATS__HEALTH_FILE=/run/ffleet/health \
    FFLEET_STORAGE__WORK_DIR=/var/tmp/ffleet-work
ENTRYPOINT ["ffleet"]
CMD ["--help"]
