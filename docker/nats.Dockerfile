# nats-server on the local Debian base, laid out like the official image (`/nats-server` as the
# entrypoint), so compose runs either one unchanged. scripts/images.sh stages the pinned release
# binary that scripts/setup.sh installs (.tools/nats-server-*/nats-server) as the build context.
ARG FFLEET_BASE_IMAGE=debian:bookworm-slim
FROM ${FFLEET_BASE_IMAGE}
COPY nats-server /nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--help"]
