"""Local paths and URIs (gs://, s3://, ram://): the one test of which is which."""


def is_local(path: str) -> bool:
    """False for URIs such as gs://bucket/dir, s3://bucket/dir or ram://dir."""
    return '://' not in path
