def main() -> None:
    raise SystemExit("octavia: the CLI is being built")
