# docker/standin/rabbitmq.Dockerfile - a stand-in for rabbitmq:3-management
# where no registry is reachable: Debian's rabbitmq-server (3.10) with the
# management plugin, guest allowed from other hosts, logs to stdout, run as
# the rabbitmq user. docker/offline-images.sh builds it, tagged with the
# compose file's image name, only when that image is not present.
FROM debian:bookworm-slim
# python3: rabbitmqadmin, which the Docker test reads the queue with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends rabbitmq-server python3 \
    && rm -rf /var/lib/apt/lists/* \
    && echo '[rabbitmq_management].' >/etc/rabbitmq/enabled_plugins \
    && printf '%s\n' 'loopback_users = none' 'listeners.tcp.default = 5672' \
       'management.tcp.port = 15672' 'log.console = true' 'log.file = false' \
       >/etc/rabbitmq/rabbitmq.conf
USER rabbitmq
WORKDIR /var/lib/rabbitmq
ENV HOME=/var/lib/rabbitmq
EXPOSE 5672 15672
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
