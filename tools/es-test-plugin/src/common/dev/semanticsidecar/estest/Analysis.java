package dev.semanticsidecar.estest;

import java.util.Locale;
import java.util.Map;
import java.util.function.Function;

import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.cjk.CJKAnalyzer;
import org.apache.lucene.analysis.cjk.CJKBigramFilter;
import org.apache.lucene.analysis.cjk.CJKWidthFilter;
import org.apache.lucene.analysis.en.EnglishAnalyzer;
import org.apache.lucene.analysis.en.EnglishMinimalStemFilter;
import org.apache.lucene.analysis.en.EnglishPossessiveFilter;
import org.apache.lucene.analysis.en.PorterStemFilter;
import org.elasticsearch.index.analysis.AnalyzerProvider;
import org.elasticsearch.index.analysis.AnalyzerScope;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;

/**
 * The analysis-common pieces the project's pipelines use, rebuilt from Lucene: analyzers
 * {@code english} (stopwords + Porter stemming, as analysis-common's default) and {@code cjk};
 * token filters {@code stemmer} (languages english, porter, minimal_english,
 * possessive_english), {@code porter_stem}, {@code cjk_width},
 * {@code cjk_bigram}. Custom stopword lists and stem exclusions are not supported: an unknown
 * {@code stemmer} language is refused with a message naming the ones that are.
 */
final class Analysis {
    private Analysis() {}

    static Map<String, AnalysisProvider<AnalyzerProvider<? extends Analyzer>>> analyzers() {
        return Map.of(
            "english", (idx, env, name, settings) -> analyzer(name, new EnglishAnalyzer()),
            "cjk", (idx, env, name, settings) -> analyzer(name, new CJKAnalyzer()));
    }

    static Map<String, AnalysisProvider<TokenFilterFactory>> tokenFilters() {
        return Map.of(
            "stemmer", (idx, env, name, settings) -> filter(name, stemmer(settings.get("language", settings.get("name", "english")))),
            "porter_stem", (idx, env, name, settings) -> filter(name, PorterStemFilter::new),
            "cjk_width", (idx, env, name, settings) -> filter(name, CJKWidthFilter::new),
            "cjk_bigram", (idx, env, name, settings) -> filter(name, CJKBigramFilter::new));
    }

    private static Function<TokenStream, TokenStream> stemmer(String language) {
        switch (language.toLowerCase(Locale.ROOT)) {
            case "english":
            case "porter":
                return PorterStemFilter::new;
            case "minimal_english":
                return EnglishMinimalStemFilter::new;
            case "possessive_english":
                return EnglishPossessiveFilter::new;
            default:
                throw new IllegalArgumentException("the test stand-in's stemmer supports english, porter, "
                    + "minimal_english and possessive_english, not [" + language + "]");
        }
    }

    private static AnalyzerProvider<? extends Analyzer> analyzer(String name, Analyzer analyzer) {
        return new AnalyzerProvider<Analyzer>() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public AnalyzerScope scope() {
                return AnalyzerScope.INDEX;
            }

            @Override
            public Analyzer get() {
                return analyzer;
            }
        };
    }

    private static TokenFilterFactory filter(String name, Function<TokenStream, TokenStream> make) {
        return new TokenFilterFactory() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public TokenStream create(TokenStream in) {
                return make.apply(in);
            }
        };
    }
}
