//! The detection stage's flat record view (`otelguard_native.FlatView`): one pass over a
//! serialized OTLP `LogRecord` that yields a dict of only the attributes the loaded rules read
//! from records of its event name (docs/architecture.md, "Falco rule semantics", Evaluation).
//!
//! Why: reading attributes through upb builds a Python wrapper per element touched and costs
//! ~0.3 µs per key (more for lists); here the wire bytes are walked once in Rust and only the
//! wanted values become Python objects. The Python side (processors/detection/fields/flat.py)
//! learns which keys each event name needs and reads through upb when this module is missing.
//! The same walk gives the wanted keys' positions (for the positional upb reads) and cuts their
//! attribute fields out as bytes (the detection stage's copy of a trigger's evidence).
//!
//! Wire layout read (opentelemetry-proto, logs/v1 and common/v1): LogRecord.attributes = 6;
//! KeyValue.key = 1, .value = 2;
//! AnyValue string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7; ArrayValue.values = 1;
//! KeyValueList.values = 1. Values are what `from_any` (otlp/messages.py) gives for the same
//! bytes as upb parses them: a oneof takes its last member, a repeated message field merges
//! (its pieces are concatenated, which is protobuf's merge), the last duplicate key wins.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

type Wire<'a> = &'a [u8];

/// Bytes this walk will not read as upb would (the caller reads through upb instead): a
/// plain value, turned into a Python error only at the boundary (no PyErr on the hot path).
#[derive(Debug)]
enum Bad {
    Wire(&'static str),
    Py(PyErr),
}

impl From<std::convert::Infallible> for Bad {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<PyErr> for Bad {
    fn from(err: PyErr) -> Self {
        Bad::Py(err)
    }
}

type Walk<T> = Result<T, Bad>;

impl From<Bad> for PyErr {
    fn from(bad: Bad) -> Self {
        match bad {
            Bad::Wire(what) => PyValueError::new_err(format!("malformed OTLP bytes: {what}")),
            Bad::Py(err) => err,
        }
    }
}

fn malformed(what: &'static str) -> Bad {
    Bad::Wire(what)
}

#[inline(always)]
fn varint(buf: Wire, at: &mut usize) -> Walk<u64> {
    match buf.get(*at) {
        Some(&b) if b < 0x80 => {
            *at += 1;
            return Ok(u64::from(b));
        }
        None => return Err(malformed("truncated varint")),
        _ => {}
    }
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*at).ok_or(malformed("truncated varint"))?;
        *at += 1;
        if shift >= 64 {
            return Err(malformed("varint too long"));
        }
        value |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// One field of a message: its number and its payload (the varint / fixed value as bytes
/// for scalars, the content for length-delimited fields).
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(Wire<'a>),
    Other,
}

/// Iterates the fields of one message's bytes.
struct Fields<'a> {
    buf: Wire<'a>,
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: Wire<'a>) -> Self {
        Fields { buf, at: 0 }
    }

    #[inline(always)]
    fn next_field(&mut self) -> Walk<Option<(u64, Field<'a>)>> {
        if self.at >= self.buf.len() {
            return Ok(None);
        }
        let tag = varint(self.buf, &mut self.at)?;
        let number = tag >> 3;
        if number == 0 {
            return Err(malformed("field number 0"));
        }
        let field = match tag & 7 {
            0 => Field::Varint(varint(self.buf, &mut self.at)?),
            1 => {
                let end = self.at + 8;
                let raw = self.buf.get(self.at..end).ok_or(malformed("truncated fixed64"))?;
                self.at = end;
                Field::Fixed64(u64::from_le_bytes(raw.try_into().expect("8 bytes")))
            }
            2 => {
                let len = varint(self.buf, &mut self.at)? as usize;
                let end = self.at.checked_add(len).ok_or(malformed("length overflow"))?;
                let raw = self.buf.get(self.at..end).ok_or(malformed("truncated field"))?;
                self.at = end;
                Field::Bytes(raw)
            }
            5 => {
                self.at += 4;
                if self.at > self.buf.len() {
                    return Err(malformed("truncated fixed32"));
                }
                Field::Other
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        Ok(Some((number, field)))
    }
}

/// The oneof member of an AnyValue, as the last occurrence on the wire leaves it.
enum Any<'a> {
    Unset,
    Str(Wire<'a>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Vec<Wire<'a>>), // pieces merged by concatenation
    KvList(Vec<Wire<'a>>),
    Bytes(Wire<'a>),
}

fn text<'py>(py: Python<'py>, raw: Wire) -> Walk<Bound<'py, PyAny>> {
    let s = std::str::from_utf8(raw).map_err(|_| malformed("string is not UTF-8"))?;
    Ok(PyString::new(py, s).into_any())
}

/// Concatenation of message pieces (a merge), borrowed when there is one piece.
fn joined<'a>(pieces: &[Wire<'a>]) -> std::borrow::Cow<'a, [u8]> {
    if pieces.len() == 1 {
        std::borrow::Cow::Borrowed(pieces[0])
    } else {
        std::borrow::Cow::Owned(pieces.concat())
    }
}

/// A serialized AnyValue (possibly in pieces, merged) as `from_any` returns it.
fn any_value<'py>(py: Python<'py>, pieces: &[Wire]) -> Walk<Bound<'py, PyAny>> {
    if let [piece] = pieces {
        // the common case: one string_value filling the AnyValue
        if piece.len() >= 2 && piece[0] == 0x0A {
            let mut at = 1;
            let len = varint(piece, &mut at)? as usize;
            if at + len == piece.len() {
                return text(py, &piece[at..]);
            }
        }
    }
    let mut value = Any::Unset;
    for piece in pieces {
        let mut fields = Fields::new(piece);
        while let Some((number, field)) = fields.next_field()? {
            value = match (number, field, value) {
                (1, Field::Bytes(b), _) => Any::Str(b),
                (2, Field::Varint(v), _) => Any::Bool(v != 0),
                (3, Field::Varint(v), _) => Any::Int(v as i64),
                (4, Field::Fixed64(v), _) => Any::Double(f64::from_bits(v)),
                (5, Field::Bytes(b), Any::Array(mut parts)) => {
                    parts.push(b);
                    Any::Array(parts)
                }
                (5, Field::Bytes(b), _) => Any::Array(vec![b]),
                (6, Field::Bytes(b), Any::KvList(mut parts)) => {
                    parts.push(b);
                    Any::KvList(parts)
                }
                (6, Field::Bytes(b), _) => Any::KvList(vec![b]),
                (7, Field::Bytes(b), _) => Any::Bytes(b),
                (1..=7, _, _) => return Err(malformed("AnyValue member of the wrong wire type")),
                (_, _, kept) => kept, // unknown field: skipped, as upb keeps it aside
            };
        }
    }
    Ok(match value {
        Any::Unset => py.None().into_bound(py),
        Any::Str(b) => text(py, b)?,
        Any::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Any::Int(i) => i.into_pyobject(py)?.into_any(),
        Any::Double(d) => d.into_pyobject(py)?.into_any(),
        Any::Bytes(b) => PyBytes::new(py, b).into_any(),
        Any::Array(parts) => {
            let list = PyList::empty(py);
            each_value(&parts, |b| Ok(list.append(any_value(py, &[b])?)?))?;
            list.into_any()
        }
        Any::KvList(parts) => {
            let dict = PyDict::new(py);
            each_value(&parts, |b| {
                let (key, first, more) = key_value(b)?;
                Ok(dict.set_item(text(py, key)?, kv_value(py, first, more)?)?)
            })?;
            dict.into_any()
        }
    })
}

/// Calls `each` with every `values` (field 1) of an ArrayValue or KeyValueList given in
/// pieces (merged by concatenation).
fn each_value(pieces: &[Wire], mut each: impl FnMut(Wire) -> Walk<()>) -> Walk<()> {
    let all = joined(pieces);
    let mut fields = Fields::new(&all);
    while let Some((number, field)) = fields.next_field()? {
        if let (1, Field::Bytes(b)) = (number, field) {
            each(b)?;
        }
    }
    Ok(())
}

/// A KeyValue's key and its value's pieces (in wire order; the last key wins): the first
/// piece, and any further ones (a merge; no allocation in the common one-piece case).
fn key_value(buf: Wire) -> Walk<(Wire, Option<Wire>, Vec<Wire>)> {
    let mut key: Wire = b"";
    let mut first = None;
    let mut more = Vec::new();
    let mut fields = Fields::new(buf);
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = b,
            (2, Field::Bytes(b)) if first.is_none() => first = Some(b),
            (2, Field::Bytes(b)) => more.push(b),
            (1 | 2, _) => return Err(malformed("KeyValue member of the wrong wire type")),
            _ => {}
        }
    }
    Ok((key, first, more))
}

/// The value of a KeyValue parsed by [`key_value`].
fn kv_value<'py>(py: Python<'py>, first: Option<Wire>, more: Vec<Wire>)
                 -> Walk<Bound<'py, PyAny>> {
    match first {
        None => Ok(py.None().into_bound(py)),
        Some(b) if more.is_empty() => any_value(py, &[b]),
        Some(b) => {
            let mut pieces = vec![b];
            pieces.extend(more);
            any_value(py, &pieces)
        }
    }
}

/// FNV-1a: attribute keys are short, and this table holds only the rules' keys (fixed until a
/// reload, never grown from the input), so SipHash's flood resistance buys nothing here; it was
/// ~7 % of the walk's perf samples.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Keys = HashMap<Vec<u8>, Py<PyString>, BuildHasherDefault<Fnv>>;

/// The attribute keys the rules read from one event name's records, each with the Python
/// string the dicts use as key (one object, so dict lookups compare by identity first).
#[pyclass(module = "otelguard_native", frozen)]
struct FlatView {
    keys: Keys,
}

#[pymethods]
impl FlatView {
    #[new]
    fn new(py: Python, keys: HashSet<String>) -> Self {
        FlatView {
            keys: keys.into_iter()
                .map(|k| {
                    let obj = PyString::intern(py, &k).unbind();
                    (k.into_bytes(), obj)
                })
                .collect(),
        }
    }

    /// The wanted attributes a serialized LogRecord has, as Python values. Raises ValueError
    /// on bytes upb would not parse the same way (the caller then reads through upb).
    fn record<'py>(&self, py: Python<'py>, log_record: &[u8]) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.walk(py, log_record)?)
    }

    /// The record's attributes whose key is wanted, as the serialized `LogRecord.attributes`
    /// fields (in order, duplicates kept: merging them into a LogRecord appends copies), and
    /// their keys. The detection stage copies a trigger's evidence this way (engine.py).
    fn select<'py>(&self, py: Python<'py>, log_record: &[u8])
                   -> PyResult<(Bound<'py, PyBytes>, Vec<Bound<'py, PyString>>)> {
        Ok(self.pick(py, log_record)?)
    }

    /// Where each wanted key sits among the record's attributes (its index; the last of
    /// duplicates), for the positional upb reads (fields/view.py, AttrLayouts).
    fn positions<'py>(&self, py: Python<'py>, log_record: &[u8]) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.places(py, log_record)?)
    }
}

/// One attribute of a record whose key is wanted: its index among the record's attributes,
/// the bytes of its whole `attributes` field, the key's Python string, its value's pieces.
struct Wanted<'a, 'k> {
    index: usize,
    field: Wire<'a>,
    key: &'k Py<PyString>,
    first: Option<Wire<'a>>,
    more: Vec<Wire<'a>>,
}

impl FlatView {
    /// Calls `each` for every attribute of the serialized LogRecord whose key is wanted.
    fn each_wanted<'a>(&self, record: Wire<'a>, mut each: impl FnMut(Wanted<'a, '_>) -> Walk<()>)
                       -> Walk<()> {
        let mut fields = Fields::new(record);
        let mut index = 0;
        let mut start = 0;
        while let Some((number, field)) = fields.next_field()? {
            match (number, field) {
                (6, Field::Bytes(b)) => {
                    let (key, first, more) = key_value(b)?;
                    if let Some(obj) = self.keys.get(key) {
                        each(Wanted { index, field: &record[start..fields.at], key: obj, first,
                                      more })?;
                    }
                    index += 1;
                }
                (6, _) => return Err(malformed("attributes of the wrong wire type")),
                _ => {}
            }
            start = fields.at;
        }
        Ok(())
    }

    fn pick<'py>(&self, py: Python<'py>, record: Wire)
                 -> Walk<(Bound<'py, PyBytes>, Vec<Bound<'py, PyString>>)> {
        let mut out = Vec::new();
        let mut found = Vec::new();
        self.each_wanted(record, |w| {
            out.extend_from_slice(w.field);
            found.push(w.key.bind(py).clone());
            Ok(())
        })?;
        Ok((PyBytes::new(py, &out), found))
    }

    fn places<'py>(&self, py: Python<'py>, record: Wire) -> Walk<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        self.each_wanted(record, |w| Ok(dict.set_item(w.key.bind(py), w.index)?))?;
        Ok(dict)
    }

    fn walk<'py>(&self, py: Python<'py>, record: Wire) -> Walk<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        self.each_wanted(record, |w| {
            Ok(dict.set_item(w.key.bind(py), kv_value(py, w.first, w.more)?)?)
        })?;
        Ok(dict)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FlatView>()
}
