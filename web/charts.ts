/// <reference lib="dom" />
// Live charts of the page: Vega-Lite specs compiled once, rows streamed into the running Vega view.

import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export interface Point {
  /** Global training step (per-epoch values sit at the epoch's last step). */
  step: number;
  value: number;
  series: string;
}

/** A line chart of `series` over steps that grows as points arrive (drawn from the first point on). */
export class LiveChart {
  private view: vega.View | null = null;
  private ready: Promise<unknown> = Promise.resolve();
  private readonly spec: TopLevelSpec;

  constructor(private readonly container: HTMLElement, title: string, yTitle: string) {
    this.spec = {
      $schema: "https://vega.github.io/schema/vega-lite/v6.json",
      title,
      width: 440,
      height: 220,
      data: { name: "rows" },
      mark: { type: "line", point: { size: 18 } },
      encoding: {
        x: { field: "step", type: "quantitative", title: "step" },
        y: { field: "value", type: "quantitative", title: yTitle, scale: { zero: false } },
        color: { field: "series", type: "nominal", title: null, legend: { orient: "bottom" } },
      },
    };
  }

  add(points: Point[]): Promise<unknown> {
    // an empty view would lay out an empty domain, so the view is made with its first rows
    this.ready = this.ready.then(() => {
      if (!this.view) {
        this.view = new vega.View(vega.parse(compile(this.spec).spec), {
          renderer: "svg",
          container: this.container,
          hover: false,
        });
      }
      return this.view.insert("rows", points).runAsync();
    });
    return this.ready;
  }

  clear(): Promise<unknown> {
    this.ready = this.ready.then(() => {
      this.view?.finalize();
      this.view = null;
      this.container.replaceChildren();
    });
    return this.ready;
  }
}
