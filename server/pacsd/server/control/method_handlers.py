"""A gRPC method handler rebuilt around a wrapped behaviour (for server interceptors).

The auth, audit and replication interceptors each put a function in front of a
method's behaviour; grpc offers one factory per kind of method, each needing the
handler's serializers again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behaviour = Callable[[Any, grpc.ServicerContext], Any]

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def wrapped(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behaviour], Behaviour]
) -> grpc.RpcMethodHandler:
    """``handler`` of the same kind and serializers, its behaviour ``wrap(behaviour)``."""
    for kind, factory in _KINDS:
        inner = getattr(handler, kind)
        if inner is not None:
            return factory(
                wrap(inner),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError("a method handler without a behaviour")
