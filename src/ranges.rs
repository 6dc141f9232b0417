//! The allowed range of every numeric option and pipeline key, in one place: the command
//! line (as clap value parsers) and the pipeline checks ([`crate::pipeline::spec`]) both call
//! these, so `--lr nan` and `training.lr = nan` are refused with the same words.

/// A rule a number must follow, with the words that say it.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Smallest allowed value.
    pub min: f64,
    /// Whether `min` itself is excluded.
    pub min_open: bool,
    /// Largest allowed value.
    pub max: f64,
    /// What is allowed, in words ("a finite number > 0").
    pub words: &'static str,
}

/// Learning rates: finite, > 0, at most 100.
pub const LEARNING_RATE: Rule = Rule {
    min: 0.0,
    min_open: true,
    max: 100.0,
    words: "a finite number > 0 and at most 100",
};
/// SGD momentum: finite, in [0, 1).
pub const MOMENTUM: Rule = Rule {
    min: 0.0,
    min_open: false,
    max: 1.0 - f64::EPSILON,
    words: "a finite number in [0, 1)",
};
/// Weight decay: finite, ≥ 0, at most 10.
pub const WEIGHT_DECAY: Rule = Rule {
    min: 0.0,
    min_open: false,
    max: 10.0,
    words: "a finite number >= 0 and at most 10",
};
/// Training length in epochs: finite, > 0, at most 100,000.
pub const EPOCHS: Rule = Rule {
    min: 0.0,
    min_open: true,
    max: 1e5,
    words: "a finite number > 0 and at most 100000",
};
/// Softmax temperatures: finite, > 0, at most 100.
pub const TEMPERATURE: Rule = Rule {
    min: 0.0,
    min_open: true,
    max: 100.0,
    words: "a finite number > 0 and at most 100",
};
/// Ridge penalties: finite, ≥ 0.
pub const PENALTY: Rule = Rule {
    min: 0.0,
    min_open: false,
    max: f64::MAX,
    words: "a finite number >= 0",
};
/// A normalisation's standard deviation: finite, > 0.
pub const STD: Rule = Rule {
    min: 0.0,
    min_open: true,
    max: f64::MAX,
    words: "a finite number > 0",
};
/// Any finite number (a normalisation's mean).
pub const FINITE: Rule = Rule {
    min: f64::MIN,
    min_open: false,
    max: f64::MAX,
    words: "a finite number",
};

impl Rule {
    /// `v` if it follows the rule; otherwise what is wrong, naming `what`.
    pub fn check(&self, what: &str, v: f64) -> Result<f64, String> {
        let below = if self.min_open {
            v <= self.min
        } else {
            v < self.min
        };
        if !v.is_finite() || below || v > self.max {
            return Err(format!("{what} is {v}; it must be {}", self.words));
        }
        Ok(v)
    }
}

/// A confidence level: strictly between 0 and 1.
pub const CONFIDENCE: Rule = Rule {
    min: 0.0,
    min_open: true,
    max: 1.0 - f64::EPSILON,
    words: "a number strictly between 0 and 1",
};

/// clap parser: a confidence level ([`CONFIDENCE`]).
pub fn confidence(s: &str) -> Result<f64, String> {
    CONFIDENCE.check("the value", parse_f64(s)?)
}

/// A whole number of at least one (widths, batch sizes, counts, limits), or what is wrong.
pub fn at_least_one(what: &str, v: usize) -> Result<usize, String> {
    if v == 0 {
        return Err(format!("{what} is 0; it must be at least 1"));
    }
    Ok(v)
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|e| format!("`{s}` is not a number: {e}"))
}

/// clap parser: a learning rate ([`LEARNING_RATE`]).
pub fn learning_rate(s: &str) -> Result<f64, String> {
    LEARNING_RATE.check("the value", parse_f64(s)?)
}

/// clap parser: a momentum ([`MOMENTUM`]).
pub fn momentum(s: &str) -> Result<f64, String> {
    MOMENTUM.check("the value", parse_f64(s)?)
}

/// clap parser: a temperature ([`TEMPERATURE`]).
pub fn temperature(s: &str) -> Result<f64, String> {
    TEMPERATURE.check("the value", parse_f64(s)?)
}

/// clap parser: a weight decay ([`WEIGHT_DECAY`]).
pub fn weight_decay(s: &str) -> Result<f64, String> {
    WEIGHT_DECAY.check("the value", parse_f64(s)?)
}

/// clap parser: a number of epochs ([`EPOCHS`]).
pub fn epochs(s: &str) -> Result<f64, String> {
    EPOCHS.check("the value", parse_f64(s)?)
}

/// clap parser: a ridge penalty ([`PENALTY`]).
pub fn penalty(s: &str) -> Result<f64, String> {
    PENALTY.check("the value", parse_f64(s)?)
}

/// clap parser: a finite number ([`FINITE`]).
pub fn finite(s: &str) -> Result<f64, String> {
    FINITE.check("the value", parse_f64(s)?)
}

/// clap parser: a whole number of at least one.
pub fn positive_count(s: &str) -> Result<usize, String> {
    let v = s
        .trim()
        .parse::<usize>()
        .map_err(|e| format!("`{s}` is not a whole number: {e}"))?;
    at_least_one("the value", v)
}

/// clap parser: a whole number of pixels of at least one.
pub fn positive_pixels(s: &str) -> Result<u32, String> {
    let v = s
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("`{s}` is not a whole number: {e}"))?;
    at_least_one("the value", v as usize).map(|_| v)
}

/// clap parser: optimisation steps, a whole number from 1 to 10 million.
pub fn positive_steps(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of steps"))?;
    if v == 0 || v > 10_000_000 {
        return Err(format!("{v} steps: give 1 to 10,000,000"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_non_finite_and_out_of_range_values() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0, 1e3] {
            assert!(LEARNING_RATE.check("lr", v).is_err(), "{v}");
        }
        assert_eq!(LEARNING_RATE.check("lr", 0.05), Ok(0.05));
        for v in [f64::NAN, 1.0, -0.1, f64::INFINITY] {
            assert!(MOMENTUM.check("momentum", v).is_err(), "{v}");
        }
        assert_eq!(MOMENTUM.check("momentum", 0.0), Ok(0.0));
        for v in [f64::NAN, f64::INFINITY, 0.0, 2e5] {
            assert!(EPOCHS.check("epochs", v).is_err(), "{v}");
        }
        assert!(PENALTY.check("alpha", 0.0).is_ok());
        assert!(PENALTY.check("alpha", f64::NAN).is_err());
        assert!(at_least_one("width", 0).is_err());
        assert!(positive_count("0").is_err() && positive_count("3") == Ok(3));
        assert!(learning_rate("nan").unwrap_err().contains("finite"));
    }
}
