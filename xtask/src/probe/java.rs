//! The Java probe: asks the JDK at `JAVA_HOME` for its own properties.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::Prober;
use crate::facts::JavaFacts;

pub fn probe(prober: &Prober) -> Result<JavaFacts> {
    let java_home = prober.env.get("JAVA_HOME").context("JAVA_HOME is not set in the toolchain's environment")?;
    let java = Path::new(java_home).join("bin/java");
    let java = prober.resolve("JAVA_HOME", &java.display().to_string())?;
    let output = prober.run_ok(&java, &["-XshowSettings:properties", "-version"])?;
    parse_properties(&output.stderr)
        .with_context(|| format!("`{} -XshowSettings:properties -version` printed:\n{}", java.display(), output.stderr))
}

pub fn parse_properties(settings: &str) -> Result<JavaFacts> {
    let properties: BTreeMap<&str, &str> = settings.lines().filter_map(|line| line.trim().split_once(" = ")).collect();
    let property = |name: &str| -> Result<String> {
        properties.get(name).map(|v| v.to_string()).with_context(|| format!("the JDK did not report {name}"))
    };
    let specification = property("java.specification.version")?;
    Ok(JavaFacts {
        java_home: property("java.home")?,
        version: property("java.version")?,
        release: specification
            .rsplit('.')
            .next()
            .and_then(|major| major.parse().ok())
            .with_context(|| format!("java.specification.version {specification:?} is not a number"))?,
        vendor: property("java.vendor")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_properties_that_matter() {
        let settings = "Property settings:\n    file.encoding = UTF-8\n    java.home = /usr/lib/jvm/java-17-openjdk-amd64\n    java.specification.version = 17\n    java.vendor = Debian\n    java.version = 17.0.15\n\nopenjdk version \"17.0.15\" 2025-04-15\n";
        let facts = parse_properties(settings).unwrap();
        assert_eq!(facts.java_home, "/usr/lib/jvm/java-17-openjdk-amd64");
        assert_eq!((facts.version.as_str(), facts.release, facts.vendor.as_str()), ("17.0.15", 17, "Debian"));
        let legacy = parse_properties(&settings.replace("= 17\n", "= 1.8\n")).unwrap();
        assert_eq!(legacy.release, 8);
        assert!(parse_properties("java.home = /x\n").unwrap_err().to_string().contains("java.specification.version"));
    }
}
