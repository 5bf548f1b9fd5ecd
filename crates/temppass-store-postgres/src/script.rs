//! Several statements sent as one simple-query message, so that PostgreSQL
//! answers all of them with one write to the socket.
//!
//! tokio-postgres ends every extended-protocol statement with a `Sync`, and
//! PostgreSQL flushes its answer at every `Sync`: a batch's transaction of
//! seven statements cost seven sends on loopback, about two fifths of
//! PostgreSQL's CPU per first use in a profile. A [`Script`] runs statements
//! prepared on the connection with SQL `PREPARE` (when the connection opened)
//! through SQL `EXECUTE`, so plans stay cached and only the arguments are
//! parsed; PostgreSQL answers the whole message at its end.
//!
//! Arguments are written as SQL literals, so this module is the one place that
//! quotes a value into SQL text: every string is an escape string literal
//! (`E'…'`, read the same whatever `standard_conforming_strings` says) with
//! each `\` and `'` escaped; a string holding NUL, which no PostgreSQL text
//! may hold, is refused before anything is sent. Answers come back as text,
//! so a script is for statements whose answers are integers (or nothing).

use temppass_store::StoreError;
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

/// A value that can be written as an SQL literal of a known type.
pub(crate) trait Literal: Sync {
    /// Appends the literal to `sql`; fails only for a string PostgreSQL cannot hold.
    fn write(&self, sql: &mut String) -> Result<(), StoreError>;
}

/// A scalar that can be an element of an array literal.
pub(crate) trait Element: Literal {
    /// PostgreSQL's name of an array of this type, for the cast of the array.
    const ARRAY_TYPE: &'static str;
}

macro_rules! integer_literal {
    ($($type:ty => $array:literal),*) => {$(
        impl Literal for $type {
            fn write(&self, sql: &mut String) -> Result<(), StoreError> {
                use std::fmt::Write;
                // The cast keeps the type exact (and -9223372036854775808 a bigint).
                let _ = write!(sql, "({self})");
                Ok(())
            }
        }
        impl Element for $type {
            const ARRAY_TYPE: &'static str = $array;
        }
    )*};
}
integer_literal!(i16 => "smallint[]", i32 => "int[]", i64 => "bigint[]");

impl Literal for str {
    fn write(&self, sql: &mut String) -> Result<(), StoreError> {
        if self.contains('\0') {
            return Err(StoreError::Internal(
                "a value holds a NUL character, which PostgreSQL text cannot hold".into(),
            ));
        }
        sql.reserve(self.len() + 3);
        sql.push_str("E'");
        for c in self.chars() {
            match c {
                '\\' => sql.push_str("\\\\"),
                '\'' => sql.push_str("''"),
                c => sql.push(c),
            }
        }
        sql.push('\'');
        Ok(())
    }
}

impl Literal for &str {
    fn write(&self, sql: &mut String) -> Result<(), StoreError> {
        (**self).write(sql)
    }
}

impl Element for &str {
    const ARRAY_TYPE: &'static str = "text[]";
}

impl Literal for String {
    fn write(&self, sql: &mut String) -> Result<(), StoreError> {
        self.as_str().write(sql)
    }
}

impl Element for String {
    const ARRAY_TYPE: &'static str = "text[]";
}

impl<T: Element> Literal for Vec<T> {
    fn write(&self, sql: &mut String) -> Result<(), StoreError> {
        if self.is_empty() {
            // `ARRAY[]` has no type to infer.
            sql.push_str("'{}'::");
        } else {
            sql.push_str("ARRAY[");
            for (index, element) in self.iter().enumerate() {
                if index > 0 {
                    sql.push(',');
                }
                element.write(sql)?;
            }
            sql.push_str("]::");
        }
        sql.push_str(T::ARRAY_TYPE);
        Ok(())
    }
}

/// One argument of a statement in a script.
pub(crate) type Arg<'a> = &'a dyn Literal;

/// The statements of one simple-query message, in order.
#[derive(Debug, Default)]
pub(crate) struct Script {
    sql: String,
    statements: usize,
}

impl Script {
    /// A statement with no arguments, written by this crate (never built from a value).
    pub(crate) fn push(&mut self, sql: &'static str) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.statements += 1;
    }

    /// `EXECUTE` of the statement `PREPARE`d as `name` on the connection that runs the script.
    pub(crate) fn execute(&mut self, name: &'static str, args: &[Arg<'_>]) -> Result<(), StoreError> {
        self.sql.push_str("EXECUTE ");
        self.sql.push_str(name);
        if !args.is_empty() {
            self.sql.push('(');
            for (index, arg) in args.iter().enumerate() {
                if index > 0 {
                    self.sql.push_str(", ");
                }
                arg.write(&mut self.sql)?;
            }
            self.sql.push(')');
        }
        self.sql.push_str(";\n");
        self.statements += 1;
        Ok(())
    }

    /// How many statements it holds so far: the index of the next one's answer.
    pub(crate) fn len(&self) -> usize {
        self.statements
    }

    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }
}

/// The rows of each statement of a script, in order: one entry per statement
/// that completed (PostgreSQL stops at the first error, which the driver reports instead).
pub(crate) fn answers(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<SimpleQueryRow>> {
    let mut answers = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(row),
            SimpleQueryMessage::CommandComplete(_) => answers.push(std::mem::take(&mut rows)),
            _ => {}
        }
    }
    answers
}

/// Column `index` of a script's row, as an integer.
pub(crate) fn integer(row: &SimpleQueryRow, index: usize) -> Result<i64, StoreError> {
    let text = row.try_get(index).map_err(crate::to_store_error)?;
    let text = text.ok_or_else(|| StoreError::Internal(format!("column {index} of a script's answer is NULL")))?;
    text.parse().map_err(|e| StoreError::Internal(format!("column {index} of a script's answer, {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(value: &dyn Literal) -> String {
        let mut sql = String::new();
        value.write(&mut sql).unwrap_or_else(|e| panic!("{e}"));
        sql
    }

    #[test]
    fn strings_are_escape_literals_with_quotes_and_backslashes_escaped() {
        assert_eq!(literal(&"device-1"), "E'device-1'");
        assert_eq!(literal(&"it's"), "E'it''s'");
        assert_eq!(literal(&r"a\'b"), r"E'a\\''b'");
        assert_eq!(literal(&"é🎬"), "E'é🎬'");
    }

    #[test]
    fn a_string_with_nul_is_refused() {
        let mut sql = String::new();
        assert!(matches!("a\0b".write(&mut sql), Err(StoreError::Internal(_))));
    }

    #[test]
    fn arrays_carry_their_type_even_when_empty() {
        assert_eq!(literal(&vec![1_i16, -2]), "ARRAY[(1),(-2)]::smallint[]");
        assert_eq!(literal(&Vec::<i64>::new()), "'{}'::bigint[]");
        assert_eq!(literal(&vec!["a", "b'"]), "ARRAY[E'a',E'b''']::text[]");
        assert_eq!(literal(&i64::MIN), "(-9223372036854775808)");
    }
}

#[cfg(all(test, feature = "testing"))]
mod round_trip {
    use super::*;
    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn every_string_and_integer_comes_back_from_postgresql_as_it_was_written() {
        let Some(database) = TestDatabase::create().await else { return };
        let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        tokio::spawn(connection);
        // Whatever the server's setting, an escape string reads the same.
        client.batch_execute("SET standard_conforming_strings = off").await.unwrap_or_else(|e| panic!("{e}"));
        let texts: Vec<String> =
            ["", "'", "''", r"\", r"\'", r"\\x41", "$$", "$1", "E'", "'); DROP TABLE x; --", "é🎬"]
                .iter()
                .map(|s| (*s).to_owned())
                .chain([(1..=0x7f_u8).filter(|b| *b != 0).map(char::from).collect()])
                .collect();
        let integers = vec![i64::MIN, -1, 0, 1, i64::MAX];
        client
            .batch_execute(
                "PREPARE texts_back AS SELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u (t, i) ORDER BY i;
                 PREPARE integers_back AS SELECT n FROM unnest($1::bigint[]) WITH ORDINALITY AS u (n, i) ORDER BY i;
                 PREPARE echo AS SELECT $1::text, $2::bigint",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut script = Script::default();
        script.execute("texts_back", &[&texts]).unwrap_or_else(|e| panic!("{e}"));
        script.execute("integers_back", &[&integers]).unwrap_or_else(|e| panic!("{e}"));
        for text in &texts {
            script.execute("echo", &[text, &i64::MIN]).unwrap_or_else(|e| panic!("{e}"));
        }
        let answers = answers(client.simple_query(script.sql()).await.unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(answers.len(), 2 + texts.len());
        let arrayed: Vec<&str> = answers[0].iter().map(|row| row.get(0).unwrap_or_default()).collect();
        assert_eq!(arrayed, texts.iter().map(String::as_str).collect::<Vec<_>>());
        let numbers: Vec<i64> =
            answers[1].iter().map(|row| integer(row, 0).unwrap_or_else(|e| panic!("{e}"))).collect();
        assert_eq!(numbers, integers);
        for (answer, text) in answers[2..].iter().zip(&texts) {
            assert_eq!(answer[0].get(0), Some(text.as_str()));
            assert_eq!(integer(&answer[0], 1).ok(), Some(i64::MIN));
        }
    }
}
