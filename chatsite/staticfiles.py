"""Static files in production (DEBUG off): collected under names that carry a hash of
their contents, with compressed copies beside them, so ServeStatic (or the proxy) can
tell browsers to keep them for a year: a changed file is a new name."""

from __future__ import annotations

from servestatic.storage import CompressedManifestStaticFilesStorage


# servestatic ships no type information.
class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):  # type: ignore[misc]
    # The page is ES modules that import one another by relative path: their imports are
    # rewritten to the hashed names as well, or a hashed chat.js would load unhashed
    # modules, kept for a minute only and possibly from another release.
    support_js_module_import_aggregation = True
