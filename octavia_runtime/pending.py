"""RPCs of the API whose feature a later piece of work builds.

`@pending(descriptor, {"CreateJob": "job creation"})` gives the servicer a
method per RPC that answers UNIMPLEMENTED naming the missing feature, rather
than grpc's anonymous "Method not implemented!". Names are checked against
the service descriptor, so a typo fails at import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import ServiceDescriptor

from .errors import unimplemented

T = TypeVar("T")


def pending(service: ServiceDescriptor, features: Mapping[str, str]) -> Callable[[type[T]], type[T]]:
    def decorate(cls: type[T]) -> type[T]:
        for rpc, feature in features.items():
            stub: Callable[..., Any]
            if service.methods_by_name[rpc].server_streaming:

                async def stream_stub(self, request, context, _feature=feature):
                    raise unimplemented(_feature)
                    yield  # an async generator, as grpc expects for a server stream

                stub = stream_stub
            else:

                async def unary_stub(self, request, context, _feature=feature):
                    raise unimplemented(_feature)

                stub = unary_stub
            stub.__name__ = rpc
            setattr(cls, rpc, stub)
        return cls

    return decorate
