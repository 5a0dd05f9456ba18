#!/bin/sh
# The official rabbitmq image's entry point name, for this local stand-in: the server
# itself reads RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS (first start only), so
# there is nothing to prepare; run the command.
set -e
exec "$@"
