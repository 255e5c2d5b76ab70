def search_main() -> None:
    raise SystemExit("not implemented yet")


def data_main() -> None:
    raise SystemExit("not implemented yet")
