#!/bin/sh
# Picks the process of this image from SERVICE (gateway | agent). exec: the process gets the
# container's signals (Railway stops a deploy with SIGTERM).
set -eu

case "${SERVICE:-gateway}" in
    gateway)
        exec voicegw serve --host 0.0.0.0 --port "${PORT:-8080}"
        ;;
    agent)
        exec voicegw agent start
        ;;
    *)
        echo "entrypoint: SERVICE must be 'gateway' or 'agent'" >&2
        exit 64
        ;;
esac
