"""Attachments: files a person shows the model, stored safely.

`uploads.file_upload` takes an upload (type from its bytes, `validation`; a safe name,
`names`; limits; one row per person and SHA-256) and writes it through Django's storage
API (`storage`: local files or S3). `selectors` reads rows for messages and the page;
`context` loads the bytes of a turn's files for the model; `serving` answers the bytes;
`lifecycle` removes them when their conversation goes or they were never sent.

Below `chat.turns` and the views, above `chat.access`: it may use `access`, `spend`, `ops`,
`llm` (whose `InputFile` it fills) and the leaves, nothing above.
"""
