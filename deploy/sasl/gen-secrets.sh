#!/usr/bin/env bash
# Makes what deploy/compose.sasl.yml mounts: a private CA, the broker's TLS key + certificate
# (PEM, names kafka, localhost, 127.0.0.1) and the SCRAM credentials of the stream-rec client.
#
#   deploy/sasl/gen-secrets.sh [DIR]        # DIR defaults to deploy/secrets
#
# Files: ca.crt (give it to clients: STREAM_REC_SSL_CAFILE), ca.key, broker.pem (broker key and
# certificate chain), client.env (STREAM_REC_SASL_USERNAME / STREAM_REC_SASL_PASSWORD).
# Existing files are kept; delete DIR to rotate everything. For production use certificates
# from your own CA and a secret store instead.
set -euo pipefail

dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/secrets}"
days="${CERT_DAYS:-825}"
user="${SASL_USER:-stream-rec}"
command -v openssl > /dev/null || { echo "gen-secrets: openssl is required" >&2; exit 1; }

mkdir -p "$dir"
# The folder keeps the key material private on the host; the files inside stay readable so the
# non-root users of the containers can read their bind mounts.
chmod 700 "$dir"
cd "$dir"
umask 022

if [[ ! -f ca.crt ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days "$days" \
        -subj "/CN=stream-rec local CA" -keyout ca.key -out ca.crt 2> /dev/null
    chmod 600 ca.key
fi

if [[ ! -f broker.pem ]]; then
    cat > broker.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:kafka,DNS:localhost,IP:127.0.0.1
EXT
    # Kafka's PEM key store wants an unencrypted PKCS#8 key when ssl.key.password is unset.
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out broker.key 2> /dev/null
    openssl req -new -key broker.key -subj "/CN=kafka" -out broker.csr
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days "$days" -extfile broker.ext -out broker.crt 2> /dev/null
    cat broker.key broker.crt ca.crt > broker.pem
    chmod 644 broker.pem
    rm -f broker.key broker.csr broker.ext broker.crt ca.srl
fi

if [[ ! -f client.env ]]; then
    # Hex only: the password is spliced into kafka-configs' --add-config syntax.
    printf 'STREAM_REC_SASL_USERNAME=%s\nSTREAM_REC_SASL_PASSWORD=%s\n' \
        "$user" "$(openssl rand -hex 24)" > client.env
    chmod 600 client.env
fi

echo "gen-secrets: ready in $dir"
