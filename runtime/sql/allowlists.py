"""The SQL guard's allow-lists, deny-lists and hints (pure data).

The guard's steps (``runtime.sql.sqlcheck`` draws their flow) decide with them: node types a query
or a write may contain, functions refused by class or by name, untyped functions known to be pure,
the table functions allowed as sources, the statement families refused by their leading keyword,
the size rules, and the smaller lists for column CHECK expressions. Unknown means deny: anything
not listed here is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

Kind = Literal["select", "insert", "update", "delete"]

# ---------------------------------------------------------------------------------------------
# Hints
# ---------------------------------------------------------------------------------------------

HINT_ONE_STATEMENT: Final = "send one statement per call"
HINT_SCHEMA_CHANGE: Final = "Schema changes are made by proposing a spec change, not by SQL."
HINT_TRANSACTION: Final = (
    "The runtime owns transactions; send the statement alone, without BEGIN/COMMIT/ROLLBACK."
)
HINT_SYSTEM: Final = (
    "Settings, files, extensions, other databases and catalog inspection are off limits; "
    "describe_app shows the application schema."
)
HINT_READ_ONLY: Final = "This call is read-only: send a single SELECT. Writes belong in application actions."
HINT_WRITES: Final = "Use SELECT, INSERT, UPDATE or DELETE against application tables."
HINT_CONSTRUCT: Final = (
    "Rewrite the statement without this construct; only plain SELECT/INSERT/UPDATE/DELETE syntax is accepted."
)
HINT_MERGE: Final = "MERGE is not supported; use INSERT ... ON CONFLICT or UPDATE."
HINT_TABLES: Final = (
    "Use the application tables and views listed in details.known_tables; describe_app shows their columns."
)
HINT_FUNCTION: Final = (
    "Use built-in scalar, aggregate or window functions; file, catalog, setting, sequence and "
    "session functions are off limits."
)
HINT_PARAMS: Final = "Use named parameters such as $customer_id (lowercase letters, digits, underscores)."
HINT_LIMIT: Final = (
    "Simplify the statement: shorten it, flatten nesting, or replace long OR chains with IN (...)."
)
HINT_ASCII: Final = "Identifiers must be plain ASCII; non-ASCII text belongs in string literals."
HINT_CHECK: Final = (
    "A check may use this table's columns, literals, operators, CASE, CAST, IN lists, LIKE, BETWEEN, "
    "IS NULL and pure scalar functions such as length, lower, regexp_matches or date_part."
)

# ---------------------------------------------------------------------------------------------
# Allow-lists and deny-lists
# ---------------------------------------------------------------------------------------------

QUERY_NODES: Final[frozenset[type[exp.Expr]]] = frozenset(
    {
        # statements and clauses
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.Subquery,
        exp.From,
        exp.Join,
        exp.Where,
        exp.Group,
        exp.GroupingSets,
        exp.Cube,
        exp.Rollup,
        exp.Having,
        exp.Qualify,
        exp.Order,
        exp.Ordered,
        exp.Limit,
        exp.Offset,
        exp.Fetch,
        exp.LimitOptions,
        exp.Distinct,
        exp.With,
        exp.CTE,
        exp.Table,
        exp.TableAlias,
        exp.TableSample,
        exp.Lateral,
        exp.Values,
        exp.Window,
        exp.WindowSpec,
        # names and literals
        exp.Alias,
        exp.Column,
        exp.Identifier,
        exp.Star,
        exp.Literal,
        exp.Boolean,
        exp.Null,
        exp.Var,
        exp.ByteString,
        exp.RawString,
        exp.HexString,
        exp.BitString,
        exp.Placeholder,
        exp.DataType,
        exp.DataTypeParam,
        exp.Interval,
        exp.Tuple,
        exp.Paren,
        exp.Dot,
        exp.Bracket,
        exp.Slice,
        exp.PropertyEQ,
        exp.Kwarg,
        exp.Lambda,
        exp.Comprehension,
        exp.JSONPath,
        exp.JSONPathKey,
        exp.JSONPathRoot,
        exp.JSONPathSubscript,
        exp.JSONPathSlice,
        exp.JSONPathWildcard,
        # operators and predicates
        exp.Neg,
        exp.Not,
        exp.BitwiseNot,
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.Div,
        exp.IntDiv,
        exp.Mod,
        exp.Pow,
        exp.DPipe,
        exp.BitwiseAnd,
        exp.BitwiseOr,
        exp.BitwiseXor,
        exp.BitwiseLeftShift,
        exp.BitwiseRightShift,
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.NullSafeEQ,
        exp.NullSafeNEQ,
        exp.Is,
        exp.In,
        exp.Between,
        exp.Like,
        exp.ILike,
        exp.Glob,
        exp.SimilarTo,
        exp.Escape,
        exp.Overlaps,
        exp.Any,
        exp.All,
        exp.AtTimeZone,
        exp.Filter,
        exp.WithinGroup,
        exp.IgnoreNulls,
        exp.RespectNulls,
    }
)
"""Non-function node types a read-only query may contain. Functions are judged by _check_function."""

WRITE_NODES: Final[frozenset[type[exp.Expr]]] = QUERY_NODES | {
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Returning,
    exp.OnConflict,
    exp.Schema,
}

WRITE_STATEMENTS: Final[frozenset[type[exp.Expr]]] = frozenset({exp.Insert, exp.Update, exp.Delete})

STATEMENT_CLASSES: Final[Mapping[type[exp.Expr], Kind]] = {
    exp.Select: "select",
    exp.Union: "select",
    exp.Intersect: "select",
    exp.Except: "select",
    exp.Insert: "insert",
    exp.Update: "update",
    exp.Delete: "delete",
}

DENIED_FUNCTION_CLASSES: Final[frozenset[type[exp.Expr]]] = frozenset(
    {exp.ReadCSV, exp.ReadParquet, exp.NextValueFor, exp.ToFile, exp.Secret}
)
"""Typed sqlglot functions that read files or touch sequences and secrets."""

DENIED_FUNCTION_NAMES: Final = re.compile(
    r"""
    (duckdb_|pragma_|sqlite_|pg_|read_|parquet_|iceberg_|delta_|postgres_|mysql_|icu_|st_|__|
     enable_|disable_|json_execute|has_\w*_privilege\Z|
     (current_setting|getenv|getvariable|glob|query|query_table|nextval|currval|setval|setseed|
      load_extension|install_extension|system|sleep_ms|write_log|checkpoint|force_checkpoint|
      sniff_csv|which_secret|current_query|in_search_path)\Z)
    """,
    re.VERBOSE,
)
"""Function names refused outright, whatever else is known about them."""

ANONYMOUS_FUNCTIONS: Final[frozenset[str]] = frozenset(
    """
    add age aggregate ago arbitrary arg_max_null arg_max_nulls_last arg_min_null arg_min_nulls_last
    array_aggr array_aggregate array_apply array_cosine_distance array_cosine_similarity
    array_cross_product array_distance array_dot_product array_extract array_grade_up array_has_any
    array_indexof array_inner_product array_negative_dot_product array_negative_inner_product
    array_pop_back array_pop_front array_push_back array_push_front array_reduce array_resize
    array_select array_to_json array_transform array_unique array_value array_where array_zip
    bar base64 bin bit_count bit_position bitstring bitstring_agg cardinality century count_star
    current_localtime date_part date_sub datepart datesub days_in_month decade
    divide element_at entropy enum_code enum_first enum_last enum_range enum_range_boundary
    epoch_ns epoch_us equi_width_bins era error even favg fdiv fill fmod format_bytes
    formatreadabledecimalsize formatreadablesize from_binary from_json_strict fsum gamma gcd
    geomean geometric_mean get_current_timestamp grade_up greatest_common_divisor hamming hash
    histogram histogram_exact ilike_escape isfinite isoyear jaccard jaro_similarity
    json_array_length json_contains json_exists json_group_array json_group_object
    json_group_structure json_insert json_merge_patch json_pretty json_quote json_replace
    json_structure json_transform json_transform_strict json_valid json_value julian kahan_sum
    kurtosis_pop lcm least_common_multiple left_grapheme length_grapheme lgamma like_escape
    list_aggr list_aggregate list_any_value list_apply list_approx_count_distinct list_avg
    list_bit_and list_bit_or list_bit_xor list_bool_and list_bool_or list_cat
    list_cosine_similarity list_count list_dot_product list_element list_entropy list_extract
    list_first list_grade_up list_has_all list_histogram list_indexof list_inner_product
    list_intersect list_kurtosis list_kurtosis_pop list_last list_mad list_median list_mode
    list_negative_dot_product list_negative_inner_product list_pack list_position list_product
    list_reduce list_resize list_reverse list_select list_sem list_skewness list_slice
    list_stddev_pop list_stddev_samp list_string_agg list_sum list_unique list_var_pop
    list_var_samp list_where list_zip mad make_timestamp_ms make_timestamp_ns make_timestamptz
    map_concat map_contains map_contains_entry map_contains_value map_entries map_extract
    map_extract_value map_values md5_number md5_number_lower md5_number_upper mean microsecond
    millennium millisecond mismatches multiply nanosecond nextafter nfc_normalize
    normalized_interval not_ilike_escape not_like_escape now octet_length ord prefix printf
    product rank_dense regexp_escape regexp_split_to_array regexp_split_to_table
    reservoir_quantile round_even roundbankers row sem set_bit signbit strip_accents strlen
    struct_concat struct_contains struct_extract_at struct_has struct_indexof struct_insert
    struct_keys struct_position struct_update struct_values substring_grapheme subtract suffix
    sum_no_overflow sumkahan timezone timezone_hour timezone_minute to_base to_centuries
    to_decades to_hours to_json to_microseconds to_millennia to_milliseconds to_minutes
    to_months to_quarters to_seconds to_weeks to_years transaction_timestamp try_strptime unbin
    union_extract union_tag union_value url_decode url_encode uuid_extract_timestamp
    uuid_extract_version uuidv4 uuidv7 wavg weekday weighted_avg yearweek
    """.split()  # noqa: SIM905 -- a block of words reads better than one line per name
)
"""DuckDB functions sqlglot does not type (it parses them as exp.Anonymous) that are pure
computations over their arguments."""

TABLE_FUNCTIONS: Final[tuple[type[exp.Expr], ...]] = (exp.GenerateSeries, exp.Explode, exp.Unnest)
"""The only functions allowed as a FROM source: range, generate_series and unnest."""

RESERVED_PREFIXES: Final = ("duckdb_", "pg_", "sqlite_", "information_schema", "_buttress")

EXPRESSION_NODES: Final[frozenset[type[exp.Expr]]] = frozenset(
    {
        exp.Column,
        exp.Identifier,
        exp.Literal,
        exp.Boolean,
        exp.Null,
        exp.Var,
        exp.Paren,
        exp.Tuple,
        exp.DataType,
        exp.DataTypeParam,
        exp.Interval,
        exp.Neg,
        exp.Not,
        exp.And,
        exp.Or,
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.Div,
        exp.IntDiv,
        exp.Mod,
        exp.Pow,
        exp.DPipe,
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.NullSafeEQ,
        exp.NullSafeNEQ,
        exp.Is,
        exp.In,
        exp.Between,
        exp.Like,
        exp.ILike,
        exp.Glob,
        exp.SimilarTo,
        exp.Escape,
        exp.Case,
        exp.If,
        exp.Cast,
        exp.TryCast,
    }
)

EXPRESSION_FUNCTIONS: Final[frozenset[type[exp.Expr]]] = frozenset(
    {
        exp.Length,
        exp.Lower,
        exp.Upper,
        exp.Trim,
        exp.Abs,
        exp.Round,
        exp.Floor,
        exp.Ceil,
        exp.Sign,
        exp.Sqrt,
        exp.Coalesce,
        exp.Nullif,
        exp.Greatest,
        exp.Least,
        exp.RegexpLike,
        exp.RegexpFullMatch,
        exp.StartsWith,
        exp.EndsWith,
        exp.Contains,
        exp.StrPosition,
        exp.Substring,
        exp.Left,
        exp.Right,
        exp.Concat,
        exp.ConcatWs,
        exp.Replace,
        exp.Reverse,
        exp.Extract,
        exp.Year,
        exp.Month,
        exp.Day,
        exp.Hour,
        exp.Minute,
        exp.Second,
        exp.Quarter,
        exp.DayOfWeek,
        exp.DayOfYear,
        exp.IsNan,
        exp.IsInf,
    }
)
"""Typed functions a CHECK expression may call: pure and deterministic."""

EXPRESSION_ANONYMOUS: Final[frozenset[str]] = frozenset(
    {"date_part", "datepart", "strlen", "octet_length", "length_grapheme", "prefix", "suffix", "isfinite"}
)

REFUSED_VERBS: Final[Mapping[str, str]] = {
    **dict.fromkeys(
        ("CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "RENAME", "GRANT", "REVOKE"), HINT_SCHEMA_CHANGE
    ),
    **dict.fromkeys(
        ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"), HINT_TRANSACTION
    ),
    **dict.fromkeys(
        (
            "PRAGMA",
            "SET",
            "RESET",
            "ATTACH",
            "DETACH",
            "COPY",
            "EXPORT",
            "IMPORT",
            "INSTALL",
            "LOAD",
            "FORCE",
            "CALL",
            "CHECKPOINT",
            "VACUUM",
            "ANALYZE",
            "USE",
            "DESCRIBE",
            "DESC",
            "SHOW",
            "SUMMARIZE",
            "EXPLAIN",
            "PREPARE",
            "EXECUTE",
            "DEALLOCATE",
        ),
        HINT_SYSTEM,
    ),
    "MERGE": HINT_MERGE,
}
"""Leading keywords of statement families that are refused before parsing."""

OPENING: Final = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE})
CLOSING: Final = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE})
PARAM_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*")

MAX_AMPLIFY: Final = 100_000
"""The largest value a query may ask one size-building function for (characters or list elements)."""

MAX_ELEMENT: Final = 100
"""The widest field a format may ask for inside a lambda, whose body runs once per list element."""

MAX_NAME: Final = 64
"""The longest name (a time zone) a query may ask DuckDB to look up."""

MAX_PATTERN: Final = 100
"""The largest regular expression a query may match with, in atoms (characters, classes, groups), each
counted once per repetition. Matching costs up to the text's length times the pattern's size without
stopping at the deadline: a 260-atom pattern took 9 s on one 1 MB value, a 200-atom one 0.1 s."""


@dataclass(frozen=True)
class SizeRule:
    """How the arguments of one size-building function must be written. Positions count from 0 in the
    order the arguments are written."""

    sizes: tuple[int, ...] = ()
    """Arguments that choose how large the result is: a number literal of at most ``MAX_AMPLIFY``."""
    copied: tuple[int, ...] = ()
    """Arguments copied into the result once per unit of size, element or match: a literal (with a
    size, the literal's length times the size is at most ``MAX_AMPLIFY``)."""
    formats: tuple[int, ...] = ()
    """Format strings whose field widths choose sizes: a string literal, widths at most ``MAX_AMPLIFY``."""
    names: tuple[int, ...] = ()
    """Names DuckDB looks up (a time zone) at a cost that grows with their length, without stopping
    for the deadline: a literal of at most ``MAX_NAME`` characters."""
    patterns: tuple[int, ...] = ()
    """Regular expressions: a string literal of at most ``MAX_PATTERN`` atoms."""


SIZE_BUILDING: Final[Mapping[str, SizeRule]] = {
    # an argument chooses the size of the result
    "repeat": SizeRule(sizes=(1,), copied=(0,)),
    "lpad": SizeRule(sizes=(1,)),
    "rpad": SizeRule(sizes=(1,)),
    "bitstring": SizeRule(sizes=(1,)),
    "list_resize": SizeRule(sizes=(1,), copied=(2,)),
    "array_resize": SizeRule(sizes=(1,), copied=(2,)),
    "to_base": SizeRule(sizes=(2,)),
    "printf": SizeRule(formats=(0,)),
    "format": SizeRule(formats=(0,)),
    # an argument is copied into the result once per match or element
    "replace": SizeRule(copied=(2,)),
    "regexp_replace": SizeRule(copied=(2,), patterns=(1,)),
    "concat_ws": SizeRule(copied=(0,)),
    # an argument is a regular expression
    "regexp_matches": SizeRule(patterns=(1,)),
    "regexp_full_match": SizeRule(patterns=(1,)),
    "regexp_extract": SizeRule(patterns=(1,)),
    "regexp_extract_all": SizeRule(patterns=(1,)),
    "regexp_split_to_array": SizeRule(patterns=(1,)),
    "string_split_regex": SizeRule(patterns=(1,)),
    "str_split_regex": SizeRule(patterns=(1,)),
    # an argument names a time zone
    "timezone": SizeRule(names=(0,)),
    "time_bucket": SizeRule(names=(2,)),
    "make_timestamptz": SizeRule(names=(6,)),
}
"""Size-building functions, by their DuckDB name: functions one of whose arguments can make the result,
or the time or memory spent building it, far larger than the statement and its other inputs, outside
DuckDB's memory limit and without stopping at the deadline. Found by the function census
(``tests/security/test_function_census.py``), which calls every function the guard allows with huge
and column-sized arguments under small limits; a function it finds escaping joins this class."""

COSTLY_FUNCTIONS: Final[Mapping[str, str]] = {
    "damerau_levenshtein": "its memory grows with the product of its arguments' lengths, outside the memory "
    "limit; levenshtein() computes the edit distance in linear memory",
}
"""Functions refused outright for what they cost (the census found them escaping the limits with any
arguments of the size a column can hold), with the reason and the alternative."""

HINT_AMPLIFY: Final = (
    "Values this large are refused before they are built: DuckDB builds them outside its memory limit "
    "and cannot interrupt them. Use literal sizes and values (constants), or build rows with range() in FROM."
)
HINT_NAME: Final = (
    f"Write the time zone as a literal name of at most {MAX_NAME} characters, such as 'Europe/Paris'. "
    "time_bucket's third argument cannot be told from a column: bucket ts AT TIME ZONE 'Europe/Paris' instead."
)
HINT_PATTERN: Final = (
    f"Write the regular expression as a string literal of at most {MAX_PATTERN} atoms (characters, classes "
    "and groups, each counted once per repetition); LIKE, starts_with and contains cost less."
)
HINT_LAMBDA: Final = (
    "A lambda's body runs once per list element, so it may not build values by size (repeat, lpad, range, "
    f"format widths over {MAX_ELEMENT}): build them outside the lambda, or build rows with range() in FROM."
)
