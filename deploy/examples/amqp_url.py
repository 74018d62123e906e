"""The broker URL for the examples: with --password-file, the password is the
file's first line (so it is not on the command line, visible in `ps`), and
the URL is given without one (amqp://USER@HOST:PORT/VHOST)."""
import sys
import urllib.parse


def add_arguments(ap):
    ap.add_argument("--url", required=True, help="amqp://USER[:PASSWORD]@HOST:PORT/VHOST (amqps:// for TLS)")
    ap.add_argument("--password-file", default=None,
                    help="the password: this file's first line (then the URL has none)")


def url(a):
    """The URL to connect with, from the parsed arguments."""
    if not a.password_file:
        return a.url
    p = urllib.parse.urlsplit(a.url)
    if p.password is not None:
        sys.exit("the password is in --url and in --password-file: give it once")
    try:
        with open(a.password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except OSError as e:
        sys.exit("cannot read the password file: %s" % e)
    if not password:
        sys.exit("the password file %s is empty" % a.password_file)
    host = p.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    if p.port:
        host += ":%d" % p.port
    netloc = "%s:%s@%s" % (p.username or "", urllib.parse.quote(password, safe=""), host)
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))
