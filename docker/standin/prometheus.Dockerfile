# docker/standin/prometheus.Dockerfile - a stand-in for prom/prometheus
# where no registry is reachable: Debian's prometheus (2.42), with the
# official image's entrypoint and data directory. docker/offline-images.sh
# builds it, tagged with the compose file's image name, only when that image
# is not present.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o prometheus -g prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
