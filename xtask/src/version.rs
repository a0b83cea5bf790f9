//! Lenient numeric versions as tools print them ("2.19.2", "7.4.1", "17.0.15", "8.0.0rc1").

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version { major, minor, patch }
    }

    /// Parses the leading `MAJOR[.MINOR[.PATCH]]` of `text`; trailing suffixes are ignored.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().splitn(3, '.').map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version { major, minor, patch })
    }

    /// Finds the first version-looking word in a tool's `--version` output.
    pub fn find_in(output: &str) -> Option<Version> {
        output
            .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
            .map(|word| word.trim_start_matches('v'))
            .filter(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
            .find_map(Version::parse)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_as_tools_print_them() {
        assert_eq!(Version::parse("2.19.2"), Some(Version::new(2, 19, 2)));
        assert_eq!(Version::parse("8.0.0rc1"), Some(Version::new(8, 0, 0)));
        assert_eq!(Version::parse("17"), Some(Version::new(17, 0, 0)));
        assert_eq!(Version::parse("no_version"), None);
        assert_eq!(Version::find_in("nix (Nix) 2.18.1\n"), Some(Version::new(2, 18, 1)));
        assert_eq!(Version::find_in("kind v0.23.0 go1.22.2 linux/amd64"), Some(Version::new(0, 23, 0)));
        assert_eq!(Version::find_in("bazel no_version"), None);
        assert!(Version::new(2, 19, 0) > Version::new(2, 18, 9));
    }
}
