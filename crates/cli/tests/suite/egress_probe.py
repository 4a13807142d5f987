# The red team's tool, run inside a sandbox by tests/suite/egress.rs. Each command prints
# one line: what happened, in a form the test can compare.
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request

PROXY = ("127.0.0.1", 3128)


def head_of(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def status_and_reason(data):
    if not data:
        return "closed"
    lines = data.split(b"\r\n")
    status = lines[0].split(b" ")[1].decode() if len(lines[0].split(b" ")) > 1 else "?"
    reason = "-"
    for line in lines[1:]:
        if line.lower().startswith(b"x-cordon-reason:"):
            reason = line.split(b":", 1)[1].strip().decode()
    return f"{status} {reason}"


def raw(request):
    """Sends bytes to the proxy as they are; prints the status and reason code."""
    s = socket.create_connection(PROXY, timeout=20)
    s.sendall(request.encode().decode("unicode_escape").encode("latin-1"))
    print(status_and_reason(head_of(s)))


def get(url, proxies=True, headers=None):
    """urllib as a tool would use it; proxies from the environment unless disabled."""
    handlers = [] if proxies else [urllib.request.ProxyHandler({})]
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=20) as response:
            body = response.read().decode("latin-1")
            print(f"{response.status} {response.headers.get('x-cordon-reason', '-')} {body}")
    except urllib.error.HTTPError as e:
        print(f"{e.code} {e.headers.get('x-cordon-reason', '-')}")
    except Exception as e:  # noqa: BLE001 - the test reads the error class
        print(f"error {type(e).__name__} {e}")


def connect(authority, sni):
    """CONNECT through the proxy, then a TLS handshake naming `sni`."""
    s = socket.create_connection(PROXY, timeout=20)
    s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    answer = status_and_reason(head_of(s))
    if not answer.startswith("200"):
        print(answer)
        return
    context = ssl.create_default_context()
    try:
        tls = context.wrap_socket(s, server_hostname=sni)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        print("tls " + status_and_reason(head_of(tls)))
    except Exception as e:  # noqa: BLE001
        print(f"tls-error {type(e).__name__}")


def direct(host, port):
    """A socket straight at an address, around the proxy."""
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.close()
        print("connected")
    except OSError as e:
        print(f"error {e.errno}")


def dns(server):
    """A DNS query to a resolver of our choosing."""
    query = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(query, (server, 53))
        s.recvfrom(512)
        print("answered")
    except OSError as e:
        print(f"error {e.errno}")


def resolve(name):
    try:
        print(socket.gethostbyname(name))
    except OSError as e:
        print(f"error {e}")


def tls_direct(host, port, sni):
    """TLS to host:port with our own SNI (the in-sandbox port 443). The tunnel is blind,
    so the certificate is the test upstream's: not verified here."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        s = socket.create_connection((host, int(port)), timeout=20)
        tls = context.wrap_socket(s, server_hostname=sni)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        print("tls " + status_and_reason(head_of(tls)))
    except Exception as e:  # noqa: BLE001
        print(f"tls-error {type(e).__name__}")


command, args = sys.argv[1], sys.argv[2:]
if command == "raw":
    raw(args[0])
elif command == "get":
    headers = json.loads(args[1]) if len(args) > 1 else None
    get(args[0], headers=headers)
elif command == "get-noproxy":
    get(args[0], proxies=False)
elif command == "connect":
    connect(args[0], args[1])
elif command == "direct":
    direct(args[0], args[1])
elif command == "dns":
    dns(args[0])
elif command == "resolve":
    resolve(args[0])
elif command == "tls-direct":
    tls_direct(args[0], args[1], args[2])
elif command == "env":
    print(json.dumps(dict(os.environ)))
else:
    sys.exit(f"unknown command {command}")
