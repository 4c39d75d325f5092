#!/usr/bin/env python3
"""Build a small Chinese BERT checkpoint with random weights and a vocab.txt only.

No Chinese sentence encoder with trained weights can be had offline here (none is on PyPI in a
usable form), so the Chinese WordPiece path is tested with this stand-in: a 2-layer BERT whose
weights are random (seeded, so every machine builds the same one) and whose vocabulary is the
BERT specials, ASCII letters and digits, common punctuation and the 800 most frequent characters
of the CMRC 2018 paragraphs. Its vectors mean nothing; what it proves is that a vocab.txt-only
model tokenizes exactly like Python's BertTokenizer (per-character CJK splitting, lowercasing,
[UNK] for unknown characters) and that its ONNX export runs identically in Rust and Python.

Usage: python models/make_tiny_chinese.py --out DIR
"""

import argparse
import json
import string
from pathlib import Path

# The 800 most frequent CJK characters of ../shared/data/cmrc2018-retrieval/corpus.jsonl.
COMMON_CHARS = "的年为一在是中于大有国人以后学和时成月上地日个及与部会名出不之公分生长作本了其西行线用主被发他而由区海斯家下路可位第南到多至道子体东方亚前来球站加物同小赛新北所台代等自尔并现法三高开港最文车内市动经称因任电特也色要山此得间场军对里建入种队马这期当世外天龙香美通员理利度教过政面但立都合全化王二业或目民号式事两平能工设原约克鱼米定水士将州德巴次系进十使数广布者语华制司类岛科重比鳍正罗金机达形相性联战院明英湾太四起条关头尼常表力城从如拉列元安属无们运首食兰基视曾品总洲林门则共务心河该音包交就口女乐近界向保阿直统传处型组又改量计花演然结治星亦影校古著陆实少始单程铁受非江身已格具提角意获产纪县书较流府字接说齿只版足省游剧武群应集带黄点管指取选白级播参手朝石节连离万片冠族更张果资五社居画卡郡史委各标别专活回往京初历神光每空命今展即背风街议印创义村状红些青夫骨职转举局权清括官维侧汉皇它师认气奥帝信客还很放先完际收湖造尾阳没据死领堂研纳决黑律氏持九六深变亲曲牠知打那商未座蛇育观术志支宗究随园情记引团服反去波质存她塞银枚见叶令干普层段协兴季复构班置推镇另超且域李故半导盟早室环助周准威供佛办甲划底论易器哥示苏索济康越火圣份再八边吴编解短言博录好洋塔福源伊双争营题桥吉除卫医象儿伯馆均根欧射奇许项致奖强密百田击兵爱圆调歌森母样案速沙报澳男效老岁才料戏落件围投排修显规配终艺端停蓝温图功父土升孙刘毛缘七续含众植瓦网拿鳞泰呈给飞牙例独响伦嘉容率失装留眼范宣我萨杀软模需问莱备积洛担盖余副细便护整低乘般授增届富漫货永景诺岩简楼顿封雷几附树载境筑友仍川止素登看谷岸病何评云售占退丽雄精党硬破肉真木己隆消草皮限鲁技写声唐钟藏邻派码热辑息梁继胜考住求弹把证哈算突希亡宁值织费唱败像步店祖念药棘毕灵征朱伤满查注船酸陈防做告负臣末宫移走航序托守延宽泽乌佳练春姆词尚宝价候莫换极夏千感远习沿席臀确鸟拥读裂攻断久杯厂晚松曼野菲"

PUNCT = "，。？！、《》：；（）“”‘’—…·,.?!:;()[]-'\""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=20261129)
    args = ap.parse_args()

    import torch
    from transformers import BertConfig, BertModel

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.ascii_lowercase) + list(string.digits) + ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens += list(dict.fromkeys(PUNCT))
    tokens += [c for c in dict.fromkeys(COMMON_CHARS) if c not in tokens]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "tokenize_chinese_chars": True,
        "strip_accents": None, "model_max_length": 128,
    }, indent=2) + "\n")

    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=len(tokens), hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=256, pad_token_id=0)
    model = BertModel(config, add_pooling_layer=True).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    print(f"make_tiny_chinese: {out} ({len(tokens)} tokens, hidden 128, 2 layers, random weights, seed {args.seed})")


if __name__ == "__main__":
    main()
