#!/bin/sh
# make-certs.sh DIR: the lab's own local CA and a server certificate signed by it.
#
# Writes into DIR (created if needed), only what is missing or no longer good:
#   ca.key, ca.pem          the CA: its key (mode 0600) and self-signed certificate.
#                           Trust ca.pem (curl --cacert, the browser's authorities)
#                           and every certificate the lab makes is trusted.
#   server.key, server.pem  nginx's key (0600) and certificate for localhost and
#                           127.0.0.1 (subjectAltName), signed by the CA.
# A CA that exists is kept, so a browser told to trust it once stays happy across
# `make down` / `make up`; the server certificate is made again when it is missing,
# not signed by ca.pem, or expires within a day.
#
# One script for both targets: natively `lab up` runs it into the state
# directory; in the nginx container the entrypoint runs it into a volume. It uses
# the openssl binary because that is there wherever nginx is (nginx links
# libssl; Debian's openssl package is one apt line in the image), while the
# image has no Python beyond the standard library, which cannot make
# certificates. Flags checked with OpenSSL 3.0 (Debian bookworm); a config file
# of its own keeps the result independent of the system's openssl.cnf.
set -eu

[ $# -eq 1 ] || { echo "usage: make-certs.sh DIR" >&2; exit 2; }
dir=$1
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }

# The directory readable by all (ca.pem is public); keys are born private: what
# this script creates after it is 0600 until chmod says otherwise.
(umask 022 && mkdir -p "$dir")
umask 077
work=$(mktemp -d "$dir/.make-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat > "$work/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
# RFC 5280 §4.2.1.9: a CA certificate; pathlen 0: it signs server certificates only.
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
# Browsers and curl match names against subjectAltName only (RFC 6125 §6.4.4):
# the DNS name and the IP address the lab's URLs use.
subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

# Runs an openssl command, showing what it said only when it fails.
quiet() {
    "$@" 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
}

# EC P-256 keys: fast to make and to use, accepted by every current TLS client.
newkey() {
    quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

made_ca=no
if [ ! -s "$dir/ca.key" ] || [ ! -s "$dir/ca.pem" ]; then
    newkey "$work/ca.key"
    # Ten years: a local CA the user trusts once.
    quiet openssl req -new -x509 -config "$work/openssl.cnf" -extensions ca \
        -key "$work/ca.key" -subj "/O=Gateway Lab/CN=Gateway Lab local CA" \
        -days 3650 -sha256 -out "$work/ca.pem"
    chmod 644 "$work/ca.pem"
    mv "$work/ca.key" "$dir/ca.key"
    mv "$work/ca.pem" "$dir/ca.pem"
    made_ca=yes
    echo "make-certs.sh: made a new local CA: $dir/ca.pem"
fi

server_ok() {
    [ "$made_ca" = no ] && [ -s "$dir/server.key" ] && [ -s "$dir/server.pem" ] \
        && openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null 2>&1 \
        && openssl x509 -in "$dir/server.pem" -noout -checkend 86400 >/dev/null
}

if ! server_ok; then
    newkey "$work/server.key"
    quiet openssl req -new -config "$work/openssl.cnf" -key "$work/server.key" \
        -subj "/O=Gateway Lab/CN=localhost" -out "$work/server.csr"
    # 825 days: the longest validity Apple's platforms accept for a TLS server
    # certificate, even from a CA the user added. A random 128-bit serial
    # (RFC 5280 §4.1.2.2: unique per CA) needs no serial file.
    quiet openssl x509 -req -in "$work/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
        -extfile "$work/openssl.cnf" -extensions server -out "$work/server.pem"
    chmod 644 "$work/server.pem"
    # Key first, then certificate: a reader that finds server.pem finds its key.
    mv "$work/server.key" "$dir/server.key"
    mv "$work/server.pem" "$dir/server.pem"
    echo "make-certs.sh: made a server certificate for localhost and 127.0.0.1: $dir/server.pem"
fi
