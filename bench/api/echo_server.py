"""A bare grpc.aio echo server: `python -m bench.api.echo_server PORT GENERATED_DIR`."""

from __future__ import annotations

import asyncio
import sys


async def serve(port: int) -> None:
    import echo_pb2
    import echo_pb2_grpc
    import grpc

    class Echo(echo_pb2_grpc.EchoServiceServicer):
        async def Echo(self, request, context):
            return echo_pb2.EchoResponse(message=request.message)

        async def EchoStream(self, request, context):
            for i in range(request.count):
                yield echo_pb2.EchoResponse(message=f"{request.message} {i}")

    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])  # the bench's generated echo stubs
    asyncio.run(serve(int(sys.argv[1])))
