# One image for regiond, rackd and the rackplane CLI; docker-compose.yml
# picks the command. Build: docker build -t rackplane .
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
# for the rack's ipmi power driver.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates pxelinux syslinux-common ipxe grub-efi-amd64-bin ipmitool \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
RUN useradd --system --home /var/lib/rackplane rackplane \
 && mkdir -p /var/lib/rackplane/rack /var/lib/rackplane/secrets \
 && chown -R rackplane /var/lib/rackplane && chmod 700 /var/lib/rackplane/secrets
USER rackplane
EXPOSE 5240 5248 69/udp
ENTRYPOINT []
CMD ["regiond"]
