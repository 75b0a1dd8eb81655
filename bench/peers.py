"""The systems under test and their upstream, configured per scenario, as a user would.

Used by bench/run.py (throughput, CPU per request, latency) and bench/instructions.py
(callgrind). A scenario fixes how the proxies talk to the upstream (plain HTTP/1.1,
HTTPS with HTTP/1.1, HTTPS offering h2 by ALPN) and whether their listener is HTTPS.
Certificates are made per run with openssl under the run's directory: a CA, and one
ECDSA P-256 leaf for `localhost` and `127.0.0.1` used by the upstream and by the
proxies' HTTPS listeners; every client and proxy verifies against that CA.
"""
import dataclasses
import os
import pathlib
import random
import subprocess

# AZGATE_BENCH_PORT_BASE moves every port, so that a second checkout's instruction count can
# run beside another one (instruction counts do not suffer from sharing the machine; CPU
# time and throughput do, so run.py's figures need the machine to themselves).
BASE = int(os.environ.get("AZGATE_BENCH_PORT_BASE", "18080"))
PORTS = {
    "upstream": BASE,  # nginx, plain HTTP/1.1
    "azgate": BASE + 1,
    "azgate-token": BASE + 2,
    "nginx": BASE + 3,
    "haproxy": BASE + 4,
    "token": BASE + 5,
    "upstream-tls": BASE + 6,  # nginx, HTTPS, ALPN http/1.1 only
    "upstream-h2": BASE + 7,  # nginx, HTTPS, ALPN h2 then http/1.1
}


def _entra_sized_token(chars=1460):
    """A JWT-shaped token of an app-only Entra ID access token's size: header, claims and
    an RS256 signature (342 base64url characters), dot-separated. Made from a fixed seed,
    so every run and system injects the same bytes."""
    rng = random.Random(17)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    header, signature = 120, 342
    claims = chars - header - signature - 2
    return ".".join("".join(rng.choice(alphabet) for _ in range(n)) for n in (header, claims, signature))


# The injected credential. Azure's bearer tokens are JWTs of 1.5 KB and more, and their
# size matters: HTTP/2 upstreams get them Huffman-coded in every request head. The rounds
# measured before the fourth (bench/README.md) injected the 18-character
# `static-bench-token`; AZGATE_BENCH_TOKEN=static-bench-token runs them again as they were.
BEARER = "Bearer " + (os.environ.get("AZGATE_BENCH_TOKEN") or _entra_sized_token())
# The name the upstream's certificate is checked against by nginx and HAProxy (they match
# DNS names); azgate and the clients connect to 127.0.0.1 and check its IP address SAN.
TLS_NAME = "localhost"


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    upstream: str  # "http", "https-h1" or "https-h2"
    tls_listener: bool
    systems: tuple

    @property
    def upstream_port(self):
        return {"http": PORTS["upstream"], "https-h1": PORTS["upstream-tls"], "https-h2": PORTS["upstream-h2"]}[self.upstream]

    @property
    def upstream_scheme(self):
        return "http" if self.upstream == "http" else "https"


PEERS = ("azgate", "nginx", "haproxy")
SCENARIOS = {
    s.name: s
    for s in [
        Scenario("https-h2", "HTTPS upstream offering h2", "https-h2", False, PEERS),
        Scenario("https-h1", "HTTPS upstream, HTTP/1.1 only", "https-h1", False, PEERS),
        Scenario("ingress-h2", "HTTPS listener, HTTPS upstream offering h2", "https-h2", True, PEERS),
        Scenario("plain", "plain HTTP/1.1 on loopback (worst case)", "http", False,
                 ("direct", "azgate", "azgate-token", "nginx", "haproxy")),
    ]
}


@dataclasses.dataclass(frozen=True)
class Certs:
    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path
    combined: pathlib.Path  # cert + key in one file, as HAProxy's `crt` takes it


def make_certs(directory):
    """A CA and a leaf it signed, for `localhost` and 127.0.0.1, valid for 30 days (azgate
    warns about listener certificates that expire within 14)."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=azgate bench CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={TLS_NAME}")
    (d / "server.ext").write_text(
        f"subjectAltName=DNS:{TLS_NAME},IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "30", "-extfile", "server.ext")
    combined = d / "server-combined.pem"
    combined.write_text((d / "server.pem").read_text() + (d / "server.key").read_text())
    return Certs(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key", combined=combined)


# ---------------------------------------------------------------------------
# nginx (upstream and proxy)


def nginx_conf(out, name, http_body):
    """One nginx worker in the foreground, no access log, long keep-alive; its temp
    directories (created here) under out/<name>-tmp."""
    tmp = out / f"{name}-tmp"
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"]:
        (tmp / d).mkdir(parents=True, exist_ok=True)
    return f"""
worker_processes 1;
daemon off;
pid {out}/{name}.pid;
error_log {out}/{name}.err warn;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  # Also bounds requests per HTTP/2 connection (nginx >= 1.19.7): high, as Azure's front doors.
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
{http_body}
}}
"""


def nginx_tls_server(certs):
    # nginx 1.22 enables only TLS 1.0-1.2 by default (1.3 from 1.23.4); Azure's front doors
    # and the other systems speak 1.3.
    return f"""    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {certs.cert};
    ssl_certificate_key {certs.key};
    ssl_session_cache shared:SSL:10m;"""


def nginx_upstream_conf(out, certs=None):
    """The upstream: a 53-byte JSON answer on every path but /big (1 GiB file) and /sink
    (upload discarded). Plain HTTP/1.1 always; with `certs` also HTTPS with HTTP/1.1 only
    and HTTPS offering h2 (nginx 1.22 spells it `listen … ssl http2`)."""
    locations = f"""    location / {{ default_type application/json; return 200 '{{"id":"bench","status":"Succeeded","value":[1,2,3]}}'; }}
    location = /big {{ alias {out}/1g.bin; }}
    location = /sink {{ client_max_body_size 0; client_body_buffer_size 1m; return 200 "ok"; }}"""
    servers = [f"""  server {{
    listen 127.0.0.1:{PORTS['upstream']} backlog=4096;
{locations}
  }}"""]
    if certs is not None:
        for port, h2 in [(PORTS["upstream-tls"], ""), (PORTS["upstream-h2"], " http2")]:
            servers.append(f"""  server {{
    listen 127.0.0.1:{port} ssl{h2} backlog=4096;
{nginx_tls_server(certs)}
{locations}
  }}""")
    return nginx_conf(out, "nginx-upstream", "\n".join(servers))


def nginx_proxy_conf(out, scenario=None, certs=None):
    """nginx as the proxy. It speaks HTTP/1.1 to upstreams only (no h2 in `proxy_pass`),
    so with an h2-offering upstream it still uses HTTP/1.1 over TLS."""
    scenario = scenario or SCENARIOS["plain"]
    upstream_tls = ""
    if scenario.upstream_scheme == "https":
        upstream_tls = f"""
      proxy_ssl_trusted_certificate {certs.ca};
      proxy_ssl_verify on;
      proxy_ssl_name {TLS_NAME};
      proxy_ssl_session_reuse on;"""
    listen = f"listen 127.0.0.1:{PORTS['nginx']} backlog=4096;"
    listener_tls = ""
    if scenario.tls_listener:
        listen = f"listen 127.0.0.1:{PORTS['nginx']} ssl http2 backlog=4096;"
        listener_tls = "\n" + nginx_tls_server(certs)
    return nginx_conf(out, "nginx-proxy", f"""  upstream backend {{ server 127.0.0.1:{scenario.upstream_port}; keepalive 256; }}
  server {{
    {listen}{listener_tls}
    location /up/ {{
      proxy_pass {scenario.upstream_scheme}://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:{scenario.upstream_port};
      proxy_set_header Authorization "{BEARER}";{upstream_tls}
    }}
  }}""")


# ---------------------------------------------------------------------------
# HAProxy


def haproxy_conf(out, scenario=None, certs=None):
    """HAProxy with one thread; to an h2-offering upstream it is given `alpn h2,http/1.1`
    as a user who wants h2 would, and verifies the upstream against the run's CA."""
    scenario = scenario or SCENARIOS["plain"]
    bind = f"bind 127.0.0.1:{PORTS['haproxy']}"
    if scenario.tls_listener:
        bind += f" ssl crt {certs.combined} alpn h2,http/1.1"
    server = f"server up 127.0.0.1:{scenario.upstream_port} maxconn 2000"
    if scenario.upstream_scheme == "https":
        server += f" ssl verify required ca-file {certs.ca} verifyhost {TLS_NAME}"
        if scenario.upstream == "https-h2":
            server += " alpn h2,http/1.1"
    return f"""
global
  nbthread 1
  # Two descriptors per proxied connection; the shell's limit here is 20000.
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
frontend fe
  {bind}
  http-request set-header Authorization "{BEARER}"
  http-request set-path %[path,regsub(^/up/,/)]
  default_backend be
backend be
  http-reuse always
  {server}
"""


# ---------------------------------------------------------------------------
# azgate


def azgate_conf(port, credential, scenario=None, certs=None, upstream_port=None):
    """azgate as documented in docs/configuration.md: an `https://` upstream with the run's
    CA as the route's `ca_file` (HTTP/2 is taken by ALPN when the upstream offers it), and
    `[server.tls]` for an HTTPS listener. `upstream_port` replaces the scenario's (smoke)."""
    scenario = scenario or SCENARIOS["plain"]
    upstream_port = upstream_port or scenario.upstream_port
    listener_tls = ""
    if scenario.tls_listener:
        listener_tls = f"""
[server.tls]
cert = "{certs.cert}"
key = "{certs.key}"
"""
    route_tls = f'ca_file = "{certs.ca}"\n' if scenario.upstream_scheme == "https" else ""
    return f"""
[server]
listen = "127.0.0.1:{port}"
max_connections = 30000
{listener_tls}
[admin]
listen = ""

[log]
level = "warn"

{credential}

[[routes]]
prefix = "/up"
upstream = "{scenario.upstream_scheme}://127.0.0.1:{upstream_port}"
credential = "bench"
{route_tls}"""


STATIC_CREDENTIAL = f"""[credentials.bench]
type = "static"
header = "Authorization"
value = "{BEARER}"
"""

TOKEN_CREDENTIAL = f"""[credentials.bench]
type = "client_secret"
tenant = "bench"
client_id = "bench-app"
client_secret = "bench-secret"
scope = "https://management.azure.com/.default"
token_url = "http://127.0.0.1:{PORTS['token']}/bench/oauth2/v2.0/token"
"""


def write_configs(out, scenario, certs):
    """Writes every system's config for `scenario` into out/conf/ (apart from the logs:
    azgate watches its config's directory) and returns system -> (argv, port), the argv
    without the binary of azgate (argv[0] is None there)."""
    conf = out / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    s = scenario.name
    files = {
        f"nginx-proxy-{s}.conf": nginx_proxy_conf(out, scenario, certs),
        f"haproxy-{s}.cfg": haproxy_conf(out, scenario, certs),
        f"azgate-static-{s}.toml": azgate_conf(PORTS["azgate"], STATIC_CREDENTIAL, scenario, certs),
        f"azgate-token-{s}.toml": azgate_conf(PORTS["azgate-token"], TOKEN_CREDENTIAL, scenario, certs),
    }
    for name, text in files.items():
        (conf / name).write_text(text)
    return {
        "azgate": ([None, "serve", "-c", str(conf / f"azgate-static-{s}.toml")], PORTS["azgate"]),
        "azgate-token": ([None, "serve", "-c", str(conf / f"azgate-token-{s}.toml")], PORTS["azgate-token"]),
        "nginx": (["nginx", "-c", str(conf / f"nginx-proxy-{s}.conf")], PORTS["nginx"]),
        "haproxy": (["haproxy", "-f", str(conf / f"haproxy-{s}.cfg")], PORTS["haproxy"]),
    }


def url(system, scenario=None, path="/"):
    scenario = scenario or SCENARIOS["plain"]
    if system == "direct":
        return f"{scenario.upstream_scheme}://127.0.0.1:{scenario.upstream_port}{path}"
    if system == "azgate-before":
        system = "azgate"
    scheme = "https" if scenario.tls_listener else "http"
    return f"{scheme}://127.0.0.1:{PORTS[system]}/up{path}"
