//! What one execution of a task produced, and the digest that replicas compare.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Why a module trapped. Only the kind takes part in the digest: engines word their trap
/// messages differently, but they agree on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TrapKind {
    /// `unreachable` executed (this is also how a Rust guest's panic ends).
    Unreachable,
    /// Memory access out of bounds.
    MemoryOutOfBounds,
    /// Integer division by zero.
    IntegerDivisionByZero,
    /// Integer overflow (e.g. `i32.div_s` of `INT_MIN / -1`).
    IntegerOverflow,
    /// Invalid float to integer conversion.
    BadConversionToInteger,
    /// Indirect call to a null table entry or with the wrong signature, or table out of bounds.
    IndirectCall,
    /// Any other trap.
    Other,
}

impl TrapKind {
    /// Stable snake_case name used in digests and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Unreachable => "unreachable",
            TrapKind::MemoryOutOfBounds => "memory_out_of_bounds",
            TrapKind::IntegerDivisionByZero => "integer_division_by_zero",
            TrapKind::IntegerOverflow => "integer_overflow",
            TrapKind::BadConversionToInteger => "bad_conversion_to_integer",
            TrapKind::IndirectCall => "indirect_call",
            TrapKind::Other => "other",
        }
    }
}

/// How a deterministic execution ended. Every variant is reproducible: the same module and
/// input end the same way on every engine, so replicas can compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecStatus {
    /// The program returned from `_start` (code 0) or called `proc_exit(code)`.
    Exited { code: i32 },
    /// The fuel limit was reached.
    OutOfFuel,
    /// The program asked for more linear memory than its limit allows.
    MemoryLimit,
    /// The call depth limit was reached.
    StackOverflow,
    /// The program wrote more to stdout than its cap allows.
    StdoutLimit,
    /// The files the program left under `/out` add up to more than its output limit (they are
    /// dropped).
    OutputLimit,
    /// The module trapped.
    Trap { trap: TrapKind },
}

impl ExecStatus {
    /// Canonical text form, part of the digest.
    pub fn code(&self) -> String {
        match self {
            ExecStatus::Exited { code } => format!("exit:{code}"),
            ExecStatus::OutOfFuel => "out_of_fuel".into(),
            ExecStatus::MemoryLimit => "memory_limit".into(),
            ExecStatus::StackOverflow => "stack_overflow".into(),
            ExecStatus::StdoutLimit => "stdout_limit".into(),
            ExecStatus::OutputLimit => "output_limit".into(),
            ExecStatus::Trap { trap } => format!("trap:{}", trap.as_str()),
        }
    }

    /// True for a normal, successful exit (code 0).
    pub fn is_success(&self) -> bool {
        matches!(self, ExecStatus::Exited { code: 0 })
    }

    /// Exit code when the program exited, else `None`.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExecStatus::Exited { code } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ExecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecStatus::Exited { code: 0 } => write!(f, "exited successfully"),
            ExecStatus::Exited { code } => write!(f, "program exited with code {code}"),
            ExecStatus::OutOfFuel => write!(f, "out of fuel: the fuel limit was reached"),
            ExecStatus::MemoryLimit => {
                write!(
                    f,
                    "memory limit: the program asked for more memory than allowed"
                )
            }
            ExecStatus::StackOverflow => write!(f, "stack overflow: call depth limit reached"),
            ExecStatus::StdoutLimit => {
                write!(f, "stdout limit: the program wrote more than its cap")
            }
            ExecStatus::OutputLimit => {
                write!(
                    f,
                    "output limit: the files under /out add up to more than allowed"
                )
            }
            ExecStatus::Trap { trap } => write!(f, "trap: {}", trap.as_str()),
        }
    }
}

/// A file the program left under `/out`: its path below `/out` (components joined by `/`), size
/// and SHA-256. Its bytes travel beside the result; the digest covers the hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// The deterministic result of running a task once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub status: ExecStatus,
    /// Everything written to stdout (up to the cap).
    pub stdout: Vec<u8>,
    /// Fuel consumed, as counted by the metering injected into the module.
    pub fuel: u64,
    /// The files left under `/out`, in path order (byte-wise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<OutputFile>,
}

impl Execution {
    /// Digest replicas compare.
    pub fn digest(&self) -> Digest {
        digest_with_files(&self.status, self.fuel, &self.stdout, &self.files)
    }
}

/// SHA-256 digest of an execution, hex encoded when shown.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        let bytes = hex::decode(s).ok()?;
        Some(Digest(bytes.try_into().ok()?))
    }

    /// First 12 hex characters, for messages.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// In the OpenAPI document: the hex string it serializes to.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Digest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("SHA-256 digest of a result, 64 hex digits"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Digest {}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).ok_or_else(|| serde::de::Error::custom("digest must be 64 hex digits"))
    }
}

/// The digest of (status, fuel, stdout): `sha256("runegrid-digest-v1\n" status "\n" fuel "\n" stdout)`
/// where status is [`ExecStatus::code`] and fuel is in decimal. Any engine can compute it. A
/// result with output files has the digest of [`digest_with_files`].
pub fn digest(status: &ExecStatus, fuel: u64, stdout: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"runegrid-digest-v1\n");
    h.update(status.code().as_bytes());
    h.update(b"\n");
    h.update(fuel.to_string().as_bytes());
    h.update(b"\n");
    h.update(stdout);
    Digest(h.finalize().into())
}

/// The digest of a result: [`digest`] when `files` is empty, otherwise version 2:
/// `sha256("runegrid-digest-v2\n" status "\n" fuel "\n" len(stdout) "\n" stdout` then, per file
/// in order, `"\n" len(path) "\n" path "\n" size "\n" sha256-hex)`, numbers in decimal and
/// lengths in bytes, so no two results share an encoding.
pub fn digest_with_files(
    status: &ExecStatus,
    fuel: u64,
    stdout: &[u8],
    files: &[OutputFile],
) -> Digest {
    if files.is_empty() {
        return digest(status, fuel, stdout);
    }
    let mut h = Sha256::new();
    h.update(
        format!(
            "runegrid-digest-v2\n{}\n{fuel}\n{}\n",
            status.code(),
            stdout.len()
        )
        .as_bytes(),
    );
    h.update(stdout);
    for f in files {
        h.update(format!("\n{}\n{}\n{}\n{}", f.path.len(), f.path, f.size, f.sha256).as_bytes());
    }
    Digest(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_every_part() {
        let ok = ExecStatus::Exited { code: 0 };
        let d = digest(&ok, 10, b"hi");
        assert_ne!(d, digest(&ExecStatus::Exited { code: 1 }, 10, b"hi"));
        assert_ne!(d, digest(&ok, 11, b"hi"));
        assert_ne!(d, digest(&ok, 10, b"hj"));
        assert_eq!(d, digest(&ok, 10, b"hi"));
    }

    #[test]
    fn files_take_part_in_the_digest() {
        let ok = ExecStatus::Exited { code: 0 };
        let f = |path: &str, size, sha: &str| OutputFile {
            path: path.into(),
            size,
            sha256: sha.into(),
        };
        let one = [f("a", 1, "00")];
        assert_eq!(digest_with_files(&ok, 1, b"x", &[]), digest(&ok, 1, b"x"));
        let d = digest_with_files(&ok, 1, b"x", &one);
        assert_ne!(d, digest(&ok, 1, b"x"));
        assert_ne!(d, digest_with_files(&ok, 1, b"x", &[f("b", 1, "00")]));
        assert_ne!(d, digest_with_files(&ok, 1, b"x", &[f("a", 2, "00")]));
        assert_ne!(d, digest_with_files(&ok, 1, b"x", &[f("a", 1, "01")]));
        assert_ne!(d, digest_with_files(&ok, 1, b"", &one));
        // Lengths keep the encoding unambiguous: stdout cannot pose as a file.
        assert_ne!(
            digest_with_files(&ok, 1, b"x\n1\na\n1\n00", &[f("b", 1, "00")]),
            digest_with_files(&ok, 1, b"x", &[f("a", 1, "00"), f("b", 1, "00")])
        );
    }

    #[test]
    fn digest_hex_roundtrip() {
        let d = digest(&ExecStatus::OutOfFuel, 5, b"");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn status_codes_are_stable() {
        assert_eq!(ExecStatus::Exited { code: -3 }.code(), "exit:-3");
        assert_eq!(
            ExecStatus::Trap {
                trap: TrapKind::IntegerDivisionByZero
            }
            .code(),
            "trap:integer_division_by_zero"
        );
        let json = serde_json::to_string(&ExecStatus::Exited { code: 2 }).unwrap();
        assert_eq!(json, r#"{"kind":"exited","code":2}"#);
    }
}
