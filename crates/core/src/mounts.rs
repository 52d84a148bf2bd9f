//! Where a task's read-only input files (blobs) appear in its file system, and which names
//! are valid. A mount is named either by a plain file name (`data.csv`: the file
//! `/blobs/data.csv`) or by an absolute path (`/data/input.csv`: that path, its directories
//! made as needed, writable beside it when the task has scratch space).

/// The directory plain-named mounts appear in.
pub const MOUNT_DIR: &str = "/blobs";
/// Longest name of one path component, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest mount path, in bytes.
pub const MAX_PATH: usize = 4096;
/// Directories every task's writable root holds: no mount may replace them.
pub const ROOT_DIRS: [&str; 2] = ["tmp", "out"];

/// Where one mount appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount<'a> {
    /// `/blobs/NAME`.
    Plain(&'a str),
    /// An absolute path, as its components (not empty).
    Path(&'a str),
}

impl<'a> Mount<'a> {
    /// How `name` mounts: a name starting with `/` is a path.
    pub fn of(name: &'a str) -> Mount<'a> {
        match name.strip_prefix('/') {
            Some(_) => Mount::Path(name),
            None => Mount::Plain(name),
        }
    }

    /// The components of a path mount (after the leading `/`); a plain mount's single name
    /// under [`MOUNT_DIR`].
    pub fn components(&self) -> Vec<&'a str> {
        match self {
            Mount::Plain(n) => vec![*n],
            Mount::Path(p) => p[1..].split('/').collect(),
        }
    }
}

/// A file name is valid as a path component: not empty, not `.` or `..`, no `/` or NUL, at
/// most [`MAX_NAME`] bytes.
fn check_component(c: &str, whole: &str) -> Result<(), String> {
    if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\0']) {
        return Err(format!(
            "{whole:?} is not a valid mount: names are not empty, not . or .., without NUL"
        ));
    }
    if c.len() > MAX_NAME {
        return Err(format!(
            "{whole:?} is not a valid mount: a name is longer than {MAX_NAME} bytes"
        ));
    }
    Ok(())
}

/// Checks the names of a task's mounts: each a valid plain name or absolute path, no two the
/// same, no path under [`MOUNT_DIR`] or on one of [`ROOT_DIRS`], and no mount inside another
/// (a file cannot also be a directory).
pub fn check_mounts<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut paths: Vec<Vec<&str>> = Vec::new();
    let mut plain: Vec<&str> = Vec::new();
    for name in names {
        match Mount::of(name) {
            Mount::Plain(n) => {
                check_component(n, name)?;
                if plain.contains(&n) {
                    return Err(format!("{name:?} is mounted twice"));
                }
                plain.push(n);
            }
            m @ Mount::Path(p) => {
                if p.len() > MAX_PATH {
                    return Err(format!("a mount path is longer than {MAX_PATH} bytes"));
                }
                let parts = m.components();
                for c in &parts {
                    check_component(c, name)?;
                }
                if parts[0] == &MOUNT_DIR[1..] {
                    return Err(format!(
                        "{name:?}: mount files under {MOUNT_DIR} by their plain name"
                    ));
                }
                if parts.len() == 1 && ROOT_DIRS.contains(&parts[0]) {
                    return Err(format!("{name:?} is a directory of every task's root"));
                }
                for q in &paths {
                    let (short, long) = if q.len() <= parts.len() {
                        (q, &parts)
                    } else {
                        (&parts, q)
                    };
                    if long[..short.len()] == short[..] {
                        return Err(if short.len() == long.len() {
                            format!("{name:?} is mounted twice")
                        } else {
                            format!(
                                "/{} is mounted inside the file /{}",
                                long.join("/"),
                                short.join("/")
                            )
                        });
                    }
                }
                paths.push(parts);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_and_paths() {
        assert_eq!(check_mounts(["a.txt", "/data/in.csv", "/x"]), Ok(()));
        assert_eq!(Mount::of("/data/in.csv").components(), ["data", "in.csv"]);
        assert_eq!(Mount::of("a.txt"), Mount::Plain("a.txt"));
        assert_eq!(check_mounts(["/tmp/input", "/out/seed.txt"]), Ok(()));
    }

    #[test]
    fn bad_mounts_are_named() {
        for (names, why) in [
            (vec![""], "not a valid mount"),
            (vec![".."], "not a valid mount"),
            (vec!["a\0b"], "not a valid mount"),
            (vec!["/"], "not a valid mount"),
            (vec!["/a//b"], "not a valid mount"),
            (vec!["/a/../b"], "not a valid mount"),
            (vec!["/a/"], "not a valid mount"),
            (vec!["a", "a"], "mounted twice"),
            (vec!["/a/b", "/a/b"], "mounted twice"),
            (vec!["/a", "/a/b"], "inside the file /a"),
            (vec!["/a/b/c", "/a/b"], "inside the file /a/b"),
            (vec!["/blobs/x"], "by their plain name"),
            (vec!["/tmp"], "directory of every task's root"),
        ] {
            let e = check_mounts(names.iter().copied()).unwrap_err();
            assert!(e.contains(why), "{names:?}: {e}");
        }
        let long = format!("/{}", "n".repeat(256));
        assert!(
            check_mounts([long.as_str()])
                .unwrap_err()
                .contains("longer than 255")
        );
        let deep = "/d".repeat(2100);
        assert!(
            check_mounts([deep.as_str()])
                .unwrap_err()
                .contains("longer than 4096")
        );
    }
}
