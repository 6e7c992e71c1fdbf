# One image for regiond, rackd and the rackplane CLI; docker-compose.yml
# picks the command. Build: docker build -t rackplane .
# .dockerignore keeps .git, .rackplane (tokens, keys, images) and test
# data out of the context.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0-dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/rackplane/rackplane.Version=${VERSION}" \
      -o /out/ ./cmd/regiond ./cmd/rackd ./cmd/rackplane

FROM debian:bookworm-slim
# Bootloaders a rack imports from the system packages at start; ipmitool
# for the rack's ipmi power driver; setcap (libcap2-bin) to give rackd
# its two capabilities below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates pxelinux syslinux-common ipxe grub-efi-amd64-bin ipmitool libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# rackd runs as the image's user, not root, yet binds DHCP (67, 4011) and
# TFTP (69) on the host's network (compose runs it with network_mode:
# host, where ports below 1024 are privileged) and binds DHCP sockets to
# an interface (SO_BINDTODEVICE): file capabilities give it exactly
# those two. A container started with no-new-privileges, or with these
# capabilities dropped, cannot run it.
RUN setcap cap_net_bind_service,cap_net_raw+ep /usr/local/bin/rackd
RUN useradd --system --home /var/lib/rackplane rackplane \
 && mkdir -p /var/lib/rackplane/rack /var/lib/rackplane/secrets \
 && chown -R rackplane /var/lib/rackplane && chmod 700 /var/lib/rackplane/secrets
# In a container the rack's own first address is the container's, which
# no machine can reach: rackd refuses to start with this placeholder and
# says to set RACKPLANE_BOOT_URL (docker-compose.yml passes the operator's).
ENV RACKPLANE_BOOT_URL=http://set-RACKPLANE_BOOT_URL.invalid:5248
USER rackplane
EXPOSE 5240 5248 69/udp 67/udp 4011/udp
ENTRYPOINT []
CMD ["regiond"]
