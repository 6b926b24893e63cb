"""The one config loader: YAML files into frozen dataclasses, and their JSON Schema.

Every config kind goes through it: the agent's file (``sensor:``, ``exporter:``), the
``otelguard run`` file (those plus ``processors:``) and the processor service's pipeline file.
Each package defines its section as a frozen dataclass whose defaults are the default config;
this package reads the file once, builds every section, rejects unknown keys, and raises one
:class:`ConfigError` listing every problem with its dotted path and file:line. The same
dataclasses give the JSON Schema published under ``docs/config/`` (``otelguard config schema``).

A bottom-layer package: it imports only the standard library and PyYAML.
"""

from otelguard.config.builder import (
    INTERNAL,
    Custom,
    Issues,
    build,
    describe,
    from_mapping,
    join,
    load_file,
    load_section,
)
from otelguard.config.duration import parse_duration
from otelguard.config.environment import EnvVar
from otelguard.config.files import fsync_dir, write_atomic, write_durably
from otelguard.config.errors import Checks, ConfigError, ConfigIssue, InvalidFields
from otelguard.config.reader import (
    LocatedDict,
    LocatedList,
    line_of,
    load_yaml,
    load_yaml_documents,
    own_line,
    read_yaml_file,
)
from otelguard.config.schema import document_schema, render, schema_of

__all__ = [
    "INTERNAL", "Checks", "ConfigError", "ConfigIssue", "Custom", "EnvVar", "InvalidFields",
    "Issues", "fsync_dir", "parse_duration", "write_atomic", "write_durably",
    "LocatedDict", "LocatedList", "build", "describe", "document_schema", "from_mapping", "join",
    "line_of", "load_file", "load_section", "load_yaml", "load_yaml_documents", "own_line", "read_yaml_file", "render",
    "schema_of",
]
