"""Loopback ports: a free one to listen on, and whether something listens on one."""
import socket


def free_port(host: str = '127.0.0.1') -> int:
    """A port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = '127.0.0.1') -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0
