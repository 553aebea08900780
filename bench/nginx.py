"""deploy/nginx/chat.conf rendered for temporary ports and paths, and Debian's nginx run
with it as an unprivileged foreground process: what tests/test_deploy_nginx.py and `make
chaos` put in front of the workers, so both prove the file operators install."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = Path(os.environ.get("NGINX_PATH", "/usr/sbin/nginx"))
SITE = ROOT / "deploy" / "nginx" / "chat.conf"
PLACEHOLDER = re.compile(r"\$\{(CHAT_[A-Z_]+)\}")


def render(template: str, values: dict[str, str]) -> str:
    """What `envsubst '$CHAT_...'` does to the file: only our ${CHAT_...} names; nginx's
    own $variables are left alone."""
    missing = set(PLACEHOLDER.findall(template)) - set(values)
    assert not missing, f"no value for {missing}"
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def main_config(prefix: Path, site: Path) -> str:
    """The parts /etc/nginx/nginx.conf provides on Debian, pointed at `prefix`."""
    # As root, nginx's workers would switch to `nobody`, who cannot read temporary
    # directories; run them as ourselves.
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and its key (openssl): (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def nginx_command(prefix: Path, values: dict[str, str]) -> list[str]:
    """Render the site with `values` (every ${CHAT_...} name) into `prefix`, check it
    (`nginx -t`), and return the command that runs nginx with it in the foreground."""
    site = prefix / "chat.conf"
    site.write_text(render(SITE.read_text(), values))
    (prefix / "nginx.conf").write_text(main_config(prefix, site))
    command = [str(NGINX), "-p", str(prefix), "-e", str(prefix / "error.log")]
    command += ["-c", str(prefix / "nginx.conf")]
    subprocess.run([*command, "-t", "-q"], check=True)
    return command
