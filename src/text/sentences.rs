//! Sentence stimuli: a user's UTF-8 text file (one sentence a line), or a built-in set of
//! WordNet 3.0's example sentences (Debian's `wordnet-base` package, read from the .deb).

use std::path::Path;

use crate::error::UserError;

/// The pinned Debian package (`make data` fetches it with `apt-get download`).
pub const WORDNET_DEB: &str = "wordnet-base_3.0-37_all.deb";
/// Its sha256.
pub const WORDNET_DEB_SHA256: &str =
    "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752";

/// Sentences with their stimulus ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentences {
    /// One id per sentence (`line<N>` for a file, `wordnet/<pos>/<offset>/<k>` for WordNet).
    pub ids: Vec<String>,
    /// The sentences.
    pub text: Vec<String>,
}

/// Reads a text file: one sentence per line, blank lines skipped (ids keep the line
/// numbers). An empty file or bytes that are not UTF-8 are errors naming the line.
pub fn read_file(path: &Path) -> Result<Sentences, UserError> {
    let bytes = crate::input::read(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        UserError::input(format!(
            "`{}` is not UTF-8 text: line {line} has an invalid byte (offset {})",
            path.display(),
            e.valid_up_to()
        ))
        .hint("save the sentences as UTF-8, one per line")
    })?;
    let mut out = Sentences {
        ids: Vec::new(),
        text: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.is_empty() {
            out.ids.push(format!("line{}", i + 1));
            out.text.push(line.to_string());
        }
    }
    if out.text.is_empty() {
        return Err(
            UserError::input(format!("`{}` holds no sentences", path.display()))
                .hint("write one sentence per line"),
        );
    }
    Ok(out)
}

/// The WordNet database files and their part-of-speech tags.
const PARTS: [(&str, &str); 4] = [
    ("wordnet/data.noun", "n"),
    ("wordnet/data.verb", "v"),
    ("wordnet/data.adj", "a"),
    ("wordnet/data.adv", "r"),
];

/// One synset's gloss: its definition and its quoted example sentences.
#[derive(Debug, Clone, PartialEq)]
pub struct Gloss {
    /// `n`, `v`, `a` or `r`.
    pub pos: &'static str,
    /// The synset's byte offset (WordNet's id).
    pub offset: String,
    /// The definition (before the examples).
    pub definition: String,
    /// The examples, without their quotes.
    pub examples: Vec<String>,
}

/// Every gloss of the four WordNet data files in the `.deb` at `deb`, in file order.
pub fn wordnet_glosses(deb: &Path) -> Result<Vec<Gloss>, UserError> {
    let suffixes: Vec<&str> = PARTS.iter().map(|(f, _)| *f).collect();
    let files = crate::packages::deb_files(
        deb,
        &suffixes,
        "run `make data` (apt-get download wordnet-base=1:3.0-37)",
    )?;
    let mut out = Vec::new();
    for ((name, pos), file) in PARTS.iter().zip(files) {
        let bytes = file.ok_or_else(|| {
            UserError::input(format!("`{}` holds no {name}", deb.display()))
                .hint("use Debian's wordnet-base 1:3.0-37")
        })?;
        let text = String::from_utf8_lossy(&bytes);
        // licence lines start with spaces; synset lines with their offset
        for line in text.lines().filter(|l| !l.starts_with(' ')) {
            let Some((head, gloss)) = line.split_once(" | ") else {
                continue;
            };
            let offset = head.split(' ').next().unwrap_or_default().to_string();
            let mut parts = gloss.split("; \"");
            let definition = parts.next().unwrap_or_default().trim().to_string();
            let examples = parts
                .filter_map(|p| p.split('"').next())
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            out.push(Gloss {
                pos,
                offset,
                definition,
                examples,
            });
        }
    }
    Ok(out)
}

/// `count` WordNet example sentences, evenly spaced over all examples of 4 to 30 words in
/// file order (nouns, verbs, adjectives, adverbs): the same sentences on every machine.
/// Held out from the language models trained here, which read definitions only.
pub fn wordnet_examples(deb: &Path, count: usize) -> Result<Sentences, UserError> {
    let mut all = Vec::new();
    for g in wordnet_glosses(deb)? {
        for (k, e) in g.examples.iter().enumerate() {
            let words = e.split_whitespace().count();
            if (4..=30).contains(&words) {
                all.push((format!("wordnet/{}/{}/{k}", g.pos, g.offset), e.clone()));
            }
        }
    }
    if count == 0 || count > all.len() {
        return Err(UserError::input(format!(
            "WordNet has {} example sentences of 4 to 30 words; {count} were asked for",
            all.len()
        )));
    }
    let picked: Vec<&(String, String)> = (0..count).map(|i| &all[i * all.len() / count]).collect();
    Ok(Sentences {
        ids: picked.iter().map(|p| p.0.clone()).collect(),
        text: picked.iter().map(|p| p.1.clone()).collect(),
    })
}
