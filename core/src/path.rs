//! ZooKeeper path rules: absolute, no trailing slash, no empty, `.` or `..` segments, no
//! control or reserved characters (as `PathUtils.validatePath`).

use crate::Code;

/// Validate a client-supplied path; `BadArguments` if ZooKeeper would reject it.
pub fn validate(path: &str) -> Result<(), Code> {
    if path.is_empty() || !path.starts_with('/') {
        return Err(Code::BadArguments);
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(Code::BadArguments);
    }
    for seg in path[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(Code::BadArguments);
        }
    }
    if path.chars().any(|c| {
        let u = c as u32;
        u == 0
            || (u > 0 && u < 0x20)
            || (0x7f..=0x9f).contains(&u)
            || (0xd800..=0xf8ff).contains(&u)
            || (0xfff0..=0xffff).contains(&u)
    }) {
        return Err(Code::BadArguments);
    }
    Ok(())
}

/// Parent of a valid, non-root path (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// `path` itself, then each of its ancestors up to and including `/` (`/a/b` → `/a/b`, `/a`,
/// `/`): where a change under a prefix or a recursive watch is looked up.
pub fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let p = next?;
        next = (p != "/").then(|| parent(p));
        Some(p)
    })
}

/// Last segment of a valid, non-root path.
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Join a parent and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Is `path` equal to `prefix` or below it?
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate("/").is_ok());
        assert!(validate("/a/b-c_d.e").is_ok());
        for bad in [
            "", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\u{0}b", "/a\u{1}",
        ] {
            assert_eq!(validate(bad), Err(Code::BadArguments), "{bad:?}");
        }
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b"), "/a");
        let walk = |p| self_and_ancestors(p).collect::<Vec<_>>();
        assert_eq!(walk("/a/b/c"), ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(walk("/"), ["/"]);
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "x"), "/x");
        assert!(is_under("/a/b", "/a") && !is_under("/ab", "/a") && is_under("/a", "/"));
    }
}
