"""Why a file did not become an example: a short stable reason code and a detail."""


class FileRejected(Exception):
    """A file that cannot become an example; `reason` is a short stable code for the report."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f'{reason}: {detail}')
        self.reason = reason
        self.detail = detail
