"""`octavia`: the command-line client of Octavia.

It speaks the same REST/JSON API a browser does, through Envoy, with httpx:
one public surface to keep stable and document (the google.api.http rules in
protos/), it works through any HTTP proxy or load balancer that passes HTTP,
and it behaves exactly as the web app does. Job progress arrives as
Server-Sent Events (WatchJob through Envoy), parsed as it streams.

    client.py       the API: JSON calls, token refresh (or an API key), presigned PUT/GET, the job stream
    credentials.py  the sessions file (0600), and OCTAVIA_API_KEY
    sse.py          the Server-Sent Events parser
    progress.py     progress bars and lines
    cli.py          arguments and what a job request is made of
    commands.py     what each command does
"""
